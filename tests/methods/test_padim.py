"""PaDiM, the comparison's reference: exact per-position Gaussians, separation, save/load."""
import numpy as np
import pytest

from npad.data import ArrayDataset, MVTecDataset
from npad.methods.padim import PaDiM

SIZE = 96


@pytest.fixture(scope="module")
def fitted(tiny_mvtec):
    # all training images train (the statistics test below needs them); the test split calibrates
    return PaDiM(input_size=SIZE, d=40).fit(MVTecDataset(tiny_mvtec, split="train"),
                                            validation=MVTecDataset(tiny_mvtec, split="test"), quiet=True)


def test_mean_and_covariance_are_the_sample_statistics(fitted, tiny_mvtec):
    train = fitted._with_transform(MVTecDataset(tiny_mvtec, split="train"), train=True)
    e = fitted._embed(np.stack([train[i]["image"] for i in range(len(train))]))   # N x d x h x w
    x = e[:, :, 2, 3]                                                               # N x d at one position
    p = 2 * e.shape[3] + 3
    np.testing.assert_allclose(fitted.mean[p], x.mean(0), rtol=1e-4, atol=1e-5)
    cov = np.cov(x, rowvar=False) + 0.01 * np.eye(x.shape[1])
    np.testing.assert_allclose(fitted.inv_cov[p] @ cov, np.eye(x.shape[1]), atol=2e-3)


def test_defects_score_higher_and_save_load_is_exact(fitted, tiny_mvtec, tmp_path):
    test = MVTecDataset(tiny_mvtec, split="test")
    ev = fitted.evaluate(test)
    assert ev["image_auroc"] == 1.0 and ev["pixel_auroc"] > 0.9
    path = fitted.save(tmp_path / "padim.h5")
    again = PaDiM.load(path).predict(test)
    np.testing.assert_array_equal(again.maps, ev["result"].maps)


@pytest.mark.filterwarnings("ignore:.*(threshold rests on only|too few to keep some out)")  # tiny fits: calibrated on few images
def test_array_input_and_errors():
    imgs = np.random.default_rng(0).random((3, 3, 64, 64)).astype(np.float32)
    model = PaDiM(input_size=64, d=10).fit(imgs, quiet=True)
    assert model.predict(imgs[:1]).maps.shape == (1, 64, 64)
    with pytest.raises(ValueError, match="at least 2 training images"):
        PaDiM(input_size=64, d=10).fit(imgs[:1], quiet=True)
    with pytest.raises(ValueError, match=r"N x 3 x H x W, got shape \(2, 64, 64\)"):
        ArrayDataset(np.zeros((2, 64, 64)))
