"""Image and mask reading on hostile and odd files: NaN and float TIFFs, EXIF rotation, label and coloured
masks, truncated PNG/JPEG files (each written here)."""
import numpy as np
import pytest
from PIL import Image

from npad.data import DataLoader, DataWarning, FolderDataset, MVTecDataset, load_image, load_mask


def _tiff(path, a):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(a, np.float32), mode="F").save(path)
    return path


def _png(path, a, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path, **kw)
    return path


def _category(root, size=16):
    """train/good and test/{good,dent} with masks, 16 x 16 RGB PNGs."""
    rng = np.random.default_rng(0)
    img = lambda: (rng.random((size, size, 3)) * 255).astype(np.uint8)
    for k in range(3):
        _png(root / f"train/good/{k}.png", img())
        _png(root / f"test/good/{k}.png", img())
        _png(root / f"test/dent/{k}.png", img())
        m = np.zeros((size, size), np.uint8)
        m[k:k + 4, 2:6] = 255
        _png(root / f"ground_truth/dent/{k}_mask.png", m)
    return root


# --- float images: NaN refused, ranges read without clipping -------------------------------------------------------

@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_image_refused(tmp_path, bad):
    a = np.full((6, 6), 0.5, np.float32)
    a[2, 3] = bad
    root = _category(tmp_path / "cat")
    p = _tiff(root / "train/good/9.tif", a)
    with pytest.raises(ValueError, match=r"9\.tif has 1 NaN or inf pixel"):
        load_image(p)
    with pytest.raises(ValueError, match=r"train/good/9\.tif has 1 NaN or inf"):
        MVTecDataset(root, split="train")  # at construction, before any training


@pytest.mark.parametrize("scale", [1.0, 255.0, 65535.0])
def test_float_image_ranges(tmp_path, scale):
    a = np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6) * 0.9  # max 0.9 of the range
    x = load_image(_tiff(tmp_path / "f.tif", a * scale))
    assert x.shape == (3, 4, 6) and x.dtype == np.float32
    np.testing.assert_allclose(x[0], a, rtol=1e-6, atol=1e-7)  # not clipped to white


@pytest.mark.parametrize("lo, hi", [(-0.5, 1.0), (0.0, 70000.0)])
def test_float_image_out_of_range_refused(tmp_path, lo, hi):
    p = _tiff(tmp_path / "odd.tif", np.array([[lo, hi]], np.float32))
    with pytest.raises(ValueError, match=r"odd\.tif has values in \[.*\].*\[0, 255\]"):
        load_image(p)


def test_16bit_png(tmp_path):
    a = np.array([[0, 1000, 65535]], np.uint16)
    x = load_image(_png(tmp_path / "d.png", a))
    np.testing.assert_allclose(x[0], a / 65535.0, rtol=1e-6)


# --- EXIF orientation ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("orientation, turn", [
    (1, lambda a: a),
    (3, lambda a: np.rot90(a, 2)),
    (6, lambda a: np.rot90(a, -1)),        # shown turned 90 degrees clockwise
    (8, lambda a: np.rot90(a, 1)),
    (2, lambda a: a[:, ::-1]),             # mirrored
])
def test_exif_orientation_applied(tmp_path, orientation, turn):
    a = np.zeros((4, 8, 3), np.uint8)
    a[:, :3] = 255                          # a bright left part, and one marked corner
    a[0, 7] = (10, 200, 30)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = _png(tmp_path / "photo.png", a, exif=exif)
    np.testing.assert_array_equal(load_image(p), turn(a).transpose(2, 0, 1) / np.float32(255))
    m = _png(tmp_path / "mask.png", (a[..., 0] > 0).astype(np.uint8) * 255, exif=exif)
    np.testing.assert_array_equal(load_mask(m)[0], turn(a[..., 0] > 0))


def test_exif_rotated_jpeg(tmp_path):
    a = np.zeros((16, 32, 3), np.uint8)
    a[:, :16] = 255                         # left half white: after a 90 degree clockwise turn, the top half
    exif = Image.Exif()
    exif[0x0112] = 6
    x = load_image(_png(tmp_path / "photo.jpg", a, exif=exif, quality=95))
    assert x.shape == (3, 32, 16)
    assert x[:, :14].min() > 0.9 and x[:, 18:].max() < 0.1


# --- masks: every non-zero class is anomalous ----------------------------------------------------------------------

def test_label_mask_keeps_every_class(tmp_path):
    m = np.array([[0, 1, 2], [0, 0, 1]], np.uint8)
    np.testing.assert_array_equal(load_mask(_png(tmp_path / "labels.png", m))[0], m > 0)
    m16 = m.astype(np.uint16) * 300
    np.testing.assert_array_equal(load_mask(_png(tmp_path / "labels16.png", m16))[0], m > 0)


def test_coloured_mask_keeps_every_class(tmp_path):
    m = np.zeros((2, 4, 3), np.uint8)
    m[0, 0] = (255, 0, 0)
    m[0, 1] = (0, 255, 0)
    m[0, 2] = (0, 0, 255)                   # grey value 29: lost by a grey threshold at half the maximum
    m[1, 3] = (0, 0, 1)
    want = m.max(axis=2) > 0
    np.testing.assert_array_equal(load_mask(_png(tmp_path / "rgb.png", m))[0], want)
    pal = Image.fromarray(m).quantize(colors=8)
    pal.save(tmp_path / "pal.png")
    np.testing.assert_array_equal(load_mask(tmp_path / "pal.png")[0], want)
    rgba = np.concatenate([m, np.full((2, 4, 1), 255, np.uint8)], axis=2)
    rgba[0, 0, 3] = 0                      # a transparent pixel counts as background
    want_a = want.copy()
    want_a[0, 0] = False
    np.testing.assert_array_equal(load_mask(_png(tmp_path / "rgba.png", rgba))[0], want_a)


def test_jpeg_mask_ignores_compression_noise(tmp_path):
    m = np.zeros((32, 32), np.uint8)
    m[8:20, 10:22] = 255
    p = _png(tmp_path / "m.jpg", m, quality=50)
    assert (np.asarray(Image.open(p)) > 0).sum() > (m > 0).sum()  # the noise a non-zero rule would take
    got = load_mask(p)[0]
    assert abs(int(got.sum()) - int((m > 0).sum())) <= 8


# --- truncated files: skipped at construction, label and mask dropped with them ------------------------------------

@pytest.mark.parametrize("ext", [".png", ".jpg"])
def test_truncated_image_dropped_with_its_label_and_mask(tmp_path, ext):
    root = _category(tmp_path / "cat", size=64)
    bad = root / f"test/dent/1{ext}"
    (root / "test/dent/1.png").unlink()
    rng = np.random.default_rng(1)
    _png(bad, (rng.random((64, 64, 3)) * 255).astype(np.uint8))
    data = bad.read_bytes()
    bad.write_bytes(data[: int(len(data) * 0.8)])  # the header is intact
    with pytest.warns(DataWarning, match=rf"skipping unreadable image .*dent/1\{ext}"):
        ds = MVTecDataset(root, split="test")
    assert len(ds) == 5 and ds.labels.tolist() == [1, 1, 0, 0, 0]
    assert ds.defect_types == ["dent", "dent", "good", "good", "good"] and ds.has_masks
    batches = list(DataLoader(ds, batch_size=4))
    labels = np.concatenate([b["label"] for b in batches])
    masks = np.concatenate([b["mask"] for b in batches])
    assert labels.tolist() == ds.labels.tolist()  # as many labels as images scored
    assert [int(m.sum()) for m in masks[:2]] == [16, 16] and masks[2:].sum() == 0
    assert [p.rsplit("/", 1)[-1] for b in batches for p in b["path"]] == ["0.png", "2.png", "0.png", "1.png", "2.png"]


def test_complete_files_with_odd_endings_are_kept(tmp_path):
    rng = np.random.default_rng(2)
    a = (rng.random((8, 8, 3)) * 255).astype(np.uint8)
    padded = _png(tmp_path / "n/padded.jpg", a)
    padded.write_bytes(padded.read_bytes() + bytes(100))  # zero padding after the JPEG end marker
    tail = _png(tmp_path / "n/tail.png", a)
    tail.write_bytes(tail.read_bytes() + b"trailing bytes")  # something after IEND: decoded to decide
    _png(tmp_path / "n/plain.bmp", a)
    ds = FolderDataset(tmp_path / "n")
    assert len(ds) == 3 and ds.skipped == []


def test_array_dataset_refuses_nan():
    from npad.data import ArrayDataset

    x = np.full((3, 3, 4, 4), 0.5, np.float32)
    x[2, 1, 0, 3] = np.nan
    with pytest.raises(ValueError, match=r"1 NaN or inf value\(s\), the first in image 2"):
        ArrayDataset(x)
