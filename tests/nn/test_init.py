"""npad.nn.init.he_normal_: the variance He et al. prescribe, with the fan of a transposed
convolution counted as the inputs one output sees, so the signal keeps its scale."""
import math

import numpy as np
import pytest

import npad
from npad.nn import Conv2d, ConvTranspose2d, LeakyReLU, Linear, Sequential
from npad.nn.init import he_normal_
from npad.tensor import Tensor, no_grad


@pytest.mark.parametrize("a", [0.0, 0.2])
def test_weight_variance_and_zero_biases(a):
    net = Sequential(Linear(300, 200), Conv2d(32, 64, 3), ConvTranspose2d(64, 32, 4, stride=2))
    he_normal_(net, a=a, generator=0)
    gain2 = 2 / (1 + a * a)
    for layer, fan in [(net[0], 300), (net[1], 32 * 9), (net[2], 64 * 16 / 4)]:
        w = layer.weight.data
        assert w.std() == pytest.approx(math.sqrt(gain2 / fan), rel=0.03) and abs(w.mean()) < 0.01
        assert not layer.bias.data.any()


def test_generator_seed_is_reproducible_and_default_follows_manual_seed():
    def weights(**kw):
        net = Linear(8, 8)
        he_normal_(net, **kw)
        return net.weight.data.copy()
    np.testing.assert_array_equal(weights(generator=3), weights(generator=3))
    assert not np.array_equal(weights(generator=3), weights(generator=4))
    npad.manual_seed(5)
    first = weights()
    npad.manual_seed(5)
    np.testing.assert_array_equal(weights(), first)


@pytest.mark.parametrize("layer", [Conv2d(64, 8, 3, 1, 1), ConvTranspose2d(64, 8, 4, 2, 1)], ids=["conv", "transposed"])
def test_one_layer_multiplies_the_mean_square_by_the_gain(layer):
    """E[y^2] = fan_in Var[w] E[x^2] = gain^2 E[x^2] (less a little at the zero-padded borders); with
    PyTorch's fan for the transposed convolution (C_out k^2 = 128 here, not 256) it would be half."""
    he_normal_(layer, a=0.2, generator=0)
    x = Tensor(np.random.default_rng(0).standard_normal((2, 64, 32, 32)).astype(np.float32))
    with no_grad():
        y = layer(x)
    assert float((y.data ** 2).mean()) / float((x.data ** 2).mean()) == pytest.approx(2 / 1.04, rel=0.1)


def test_the_signal_keeps_its_scale_through_eight_leaky_relu_layers():
    """Why FAVAE's VAE without BatchNorm starts this way: PyTorch's default start shrinks the signal
    hundreds of times over eight layers, He-normal keeps its scale."""
    npad.manual_seed(0)
    layers = [m for _ in range(8) for m in (Conv2d(16, 16, 3, 1, 1), LeakyReLU(0.2))][:-1]
    x = Tensor(np.random.default_rng(0).standard_normal((2, 16, 32, 32)).astype(np.float32))

    def mean_square():
        h = x
        with no_grad():
            for m in layers:
                h = m(h)
        return float((h.data ** 2).mean()) / float((x.data ** 2).mean())

    default = mean_square()
    he_normal_(Sequential(*layers), a=0.2, generator=0)
    assert 0.5 < mean_square() < 2.0 and default < 0.01
