"""npad.data.transforms: geometry shared by image and mask, determinism, normalisation."""
import numpy as np
import pytest
from PIL import Image

from npad.data import transforms as T


def coord_image(h, w):
    """Image whose channels encode row and column (to check which pixels went where)."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return np.stack([yy / h, xx / w, np.zeros_like(yy)])  # (3,h,w)


def test_resize_matches_pil_and_mask_stays_binary():
    rng = np.random.default_rng(0)
    img = rng.random((3, 40, 60)).astype(np.float32)
    out = T.resize(img, (20, 30))
    ref = np.asarray(Image.fromarray(img[1], mode="F").resize((30, 20), Image.BILINEAR))
    np.testing.assert_allclose(out[1], ref, atol=1e-6)
    mask = (rng.random((1, 40, 60)) > 0.7).astype(np.float32)
    im2, m2 = T.Resize((25, 33))(img, mask)
    assert im2.shape == (3, 25, 33) and m2.shape == (1, 25, 33) and im2.dtype == np.float32
    assert set(np.unique(m2)) <= {0.0, 1.0}


def test_resize_int_is_shorter_side():
    im, _ = T.Resize(32)(np.zeros((3, 64, 128), np.float32))
    assert im.shape == (3, 32, 64)
    im, _ = T.Resize(32)(np.zeros((3, 128, 64), np.float32))
    assert im.shape == (3, 64, 32)


def test_center_crop():
    img = coord_image(10, 12)
    im, m = T.CenterCrop((4, 6))(img, img[:1].copy())
    assert im.shape == (3, 4, 6)
    np.testing.assert_array_equal(im, img[:, 3:7, 3:9])
    np.testing.assert_array_equal(m, img[:1, 3:7, 3:9])
    with pytest.raises(ValueError, match="larger"):
        T.center_crop(img, 20)


def test_rotation_direction_and_shared_geometry():
    x = np.zeros((1, 5, 5), np.float32)
    x[0, 0, 2] = 1  # top centre
    r = T.rotate(x, 90, order=0)
    assert r[0, 2, 0] == 1  # counter-clockwise: top -> left
    np.testing.assert_array_equal(r, np.rot90(x, 1, axes=(1, 2)))
    rng = np.random.default_rng(3)
    mask = (rng.random((1, 33, 33)) > 0.5).astype(np.float32)
    img = np.repeat(mask, 3, axis=0)
    t = T.RandomRotation(30, seed=1)
    im, m = t(img, mask, np.random.default_rng(5))
    im_n = T.rotate(img, 0.0)  # sanity: zero angle is the identity
    np.testing.assert_array_equal(im_n, img)
    # the same angle was applied: nearest-rotating the image channel equals the mask
    angle = float(np.random.default_rng(5).uniform(-30, 30))
    np.testing.assert_array_equal(m, T.rotate(mask, angle, order=0))
    np.testing.assert_allclose(im, T.rotate(img, angle, order=1), atol=1e-6)


@pytest.mark.parametrize("cls", [T.RandomHorizontalFlip, T.RandomVerticalFlip])
def test_flips_shared(cls):
    img = coord_image(8, 9)
    mask = img[:1] * 1.0
    flipped = 0
    for s in range(10):
        im, m = cls(0.5)(img, mask, np.random.default_rng(s))
        np.testing.assert_array_equal(im[:1], m)
        flipped += not np.array_equal(im, img)
    assert 0 < flipped < 10


def test_random_crop_shared_window_and_determinism():
    img = coord_image(32, 32)
    mask = img[1:2] * 1.0
    t = T.RandomCrop(10)
    im, m = t(img, mask, np.random.default_rng(0))
    assert im.shape == (3, 10, 10)
    np.testing.assert_array_equal(im[1:2], m)
    im2, _ = t(img, mask, np.random.default_rng(0))
    np.testing.assert_array_equal(im, im2)
    outs = {t(img, mask, np.random.default_rng(s))[0][:, 0, 0].tobytes() for s in range(10)}
    assert len(outs) > 3
    with pytest.raises(ValueError, match="larger"):
        T.RandomCrop(40)(img)
    assert T.RandomCrop(40, pad_if_needed=True)(img)[0].shape == (3, 40, 40)


def test_compose_seeded_own_generator_reproducible():
    img = np.random.default_rng(0).random((3, 40, 40)).astype(np.float32)
    a = T.train_transform(32, rotation=30, hflip=0.5, random_crop=24, seed=7)
    b = T.train_transform(32, rotation=30, hflip=0.5, random_crop=24, seed=7)
    c = T.train_transform(32, rotation=30, hflip=0.5, random_crop=24, seed=8)
    ra, rb, rc = a(img)[0], b(img)[0], c(img)[0]
    assert ra.shape == (3, 24, 24)
    np.testing.assert_array_equal(ra, rb)
    assert not np.array_equal(ra, rc)
    np.testing.assert_array_equal(a(img, None, 5)[0], c(img, None, np.random.default_rng(5))[0])  # int seed as rng


def test_normalize_roundtrip():
    img = np.random.default_rng(0).random((3, 4, 4)).astype(np.float32)
    n, _ = T.Normalize()(img)
    np.testing.assert_allclose(n[0], (img[0] - 0.485) / 0.229, rtol=1e-6)
    np.testing.assert_allclose(n[2], (img[2] - 0.406) / 0.225, rtol=1e-6)
    np.testing.assert_allclose(T.denormalize(n), img, atol=1e-6)
    im, m = T.standard_transform(16)(img, np.ones((1, 4, 4), np.float32))
    assert im.shape == (3, 16, 16) and m.shape == (1, 16, 16) and im.min() < 0
