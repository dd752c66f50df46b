"""Every method resizes non-square photographs (such as bsdata_pitting's 1130 x 460) to its square input."""
import numpy as np
import pytest

from npad import methods


@pytest.mark.parametrize("name", ["cflow", "adtr", "favae", "padim"])
def test_transforms_make_square_inputs(name):
    model = methods.get(name)(quick=True)
    size = model.config["input_size"]
    image, mask = np.random.default_rng(0).random((3, 46, 113)).astype(np.float32), np.zeros((1, 46, 113), np.float32)
    for t in (model.eval_transform(), model.train_transform()):
        out, m = t(image, mask, np.random.default_rng(1))
        assert out.shape == (3, size, size) and m.shape == (1, size, size)
