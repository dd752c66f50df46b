"""Conv / norm / pooling modules: shapes, PyTorch state_dict names and defaults, running statistics."""
import math

import numpy
import pytest

import npad
import npad.functional as F
import npad.nn as nn
from npad import Tensor


def _x(*shape):
    return Tensor(numpy.random.default_rng(0).standard_normal(shape).astype(numpy.float32))


def test_conv2d_module_shapes_state_and_init():
    m = nn.Conv2d(4, 6, 3, stride=2, padding=1, groups=2)
    assert list(m.state_dict()) == ["weight", "bias"]
    assert m.weight.shape == (6, 2, 3, 3) and m.bias.shape == (6,)
    bound = 1 / math.sqrt(2 * 9)   # kaiming_uniform(a=sqrt 5) bound = 1 / sqrt(fan_in), as the bias's
    assert numpy.abs(m.weight.numpy()).max() <= bound and numpy.abs(m.bias.numpy()).max() <= bound
    y = m(_x(2, 4, 9, 8))
    assert y.shape == (2, 6, 5, 4)
    y.sum().backward()
    assert m.weight.grad.shape == m.weight.shape and m.bias.grad.shape == (6,)
    assert nn.Conv2d(3, 5, 1, bias=False).bias is None
    assert nn.Conv2d(3, 5, 3, padding="same")(_x(1, 3, 7, 6)).shape == (1, 5, 7, 6)


def test_conv2d_padding_modes():
    m = nn.Conv2d(2, 3, 3, padding=1, padding_mode="reflect")
    x = _x(1, 2, 5, 5)
    ref = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), m.weight, m.bias)
    numpy.testing.assert_allclose(m(x).numpy(), ref.numpy(), rtol=1e-6)


def test_conv_transpose2d_module():
    m = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2)
    assert m.weight.shape == (4, 3, 3, 3) and list(m.state_dict()) == ["weight", "bias"]
    assert m(_x(2, 4, 5, 6)).shape == (2, 6, 10, 12)
    m2 = nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1)
    assert m2(_x(2, 4, 5, 6), output_size=(10, 11)).shape == (2, 6, 10, 11)


def test_batchnorm2d_buffers_and_modes():
    bn = nn.BatchNorm2d(3)
    assert list(bn.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    x = _x(4, 3, 5, 5) * 2 + 1
    y = bn(x)
    numpy.testing.assert_allclose(y.numpy().mean(axis=(0, 2, 3)), 0, atol=1e-5)
    assert int(bn.num_batches_tracked.data) == 1
    xd = x.numpy().astype(numpy.float64)
    numpy.testing.assert_allclose(bn.running_mean.numpy(), 0.1 * xd.mean(axis=(0, 2, 3)), rtol=1e-4)
    numpy.testing.assert_allclose(bn.running_var.numpy(), 0.9 + 0.1 * xd.var(axis=(0, 2, 3), ddof=1), rtol=1e-4)
    bn.eval()
    rm = bn.running_mean.numpy().copy()
    ye = bn(x)
    numpy.testing.assert_array_equal(bn.running_mean.numpy(), rm)
    expect = (xd - rm.reshape(1, 3, 1, 1)) / numpy.sqrt(bn.running_var.numpy().reshape(1, 3, 1, 1) + 1e-5)
    numpy.testing.assert_allclose(ye.numpy(), expect, rtol=1e-4, atol=1e-5)
    sd = bn.state_dict()
    bn2 = nn.BatchNorm2d(3)
    bn2.load_state_dict(sd)
    numpy.testing.assert_array_equal(bn2.running_var.numpy(), bn.running_var.numpy())


def test_batchnorm2d_cumulative_momentum_and_no_tracking():
    bn = nn.BatchNorm2d(2, momentum=None)
    a, b = _x(2, 2, 3, 3), _x(2, 2, 3, 3) + 5
    bn(a)
    bn(b)
    expect = (a.numpy().mean(axis=(0, 2, 3)) + b.numpy().mean(axis=(0, 2, 3))) / 2
    numpy.testing.assert_allclose(bn.running_mean.numpy(), expect, rtol=1e-5)
    free = nn.BatchNorm2d(2, track_running_stats=False, affine=False)
    assert list(free.state_dict()) == []
    free.eval()
    numpy.testing.assert_allclose(free(b).numpy().mean(axis=(0, 2, 3)), 0, atol=1e-5)


def test_group_and_instance_norm_modules():
    g = nn.GroupNorm(2, 4)
    assert list(g.state_dict()) == ["weight", "bias"]
    y = g(_x(2, 4, 3, 3)).numpy().reshape(2, 2, -1)
    numpy.testing.assert_allclose(y.mean(-1), 0, atol=1e-5)
    inorm = nn.InstanceNorm2d(4)
    assert list(inorm.state_dict()) == []
    y = inorm(_x(2, 4, 3, 3)).numpy().reshape(2, 4, -1)
    numpy.testing.assert_allclose(y.std(-1), 1, rtol=1e-3)
    tracked = nn.InstanceNorm2d(4, affine=True, track_running_stats=True)
    assert list(tracked.state_dict()) == ["weight", "bias", "running_mean", "running_var", "num_batches_tracked"]
    tracked(_x(2, 4, 3, 3))
    tracked.eval()
    assert tracked(_x(2, 4, 3, 3)).shape == (2, 4, 3, 3)


def test_pool_upsample_reshape_modules():
    x = _x(2, 3, 8, 7)
    assert nn.MaxPool2d(2)(x).shape == (2, 3, 4, 3)
    assert nn.MaxPool2d(3, 2, 1, ceil_mode=True)(x).shape == (2, 3, 5, 4)
    assert nn.AvgPool2d(2, ceil_mode=True)(x).shape == (2, 3, 4, 4)
    assert nn.AdaptiveAvgPool2d((3, 2))(x).shape == (2, 3, 3, 2)
    assert nn.AdaptiveAvgPool2d(1)(x).shape == (2, 3, 1, 1)
    assert nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)(x).shape == (2, 3, 16, 14)
    assert nn.Upsample(size=(5, 5))(x).shape == (2, 3, 5, 5)
    assert nn.Flatten()(x).shape == (2, 3 * 8 * 7)
    assert nn.Unflatten(1, (3, 56))(nn.Flatten()(x)).shape == (2, 3, 56)
    z = nn.ZeroPad2d((1, 2, 3, 0))(x)
    assert z.shape == (2, 3, 11, 10) and float(z.numpy()[:, :, :3].sum()) == 0.0
    assert nn.ZeroPad2d(1)(x).shape == (2, 3, 10, 9)


def test_small_cnn_trains_a_step():
    """A tiny conv net end to end: forward, backward, every parameter gets a gradient."""
    npad.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.Conv2d(8, 4, 1), nn.GroupNorm(2, 4),
                        nn.Upsample(scale_factor=2, mode="bilinear"), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 2))
    out = net(_x(2, 3, 8, 8))
    assert out.shape == (2, 2)
    out.sum().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name
    net.eval()
    with npad.no_grad():
        assert net(_x(1, 3, 8, 8)).shape == (1, 2)


@pytest.mark.parametrize("cls,args", [(nn.Conv2d, (3, 4, 3)), (nn.ConvTranspose2d, (3, 4, 3))])
def test_modules_double(cls, args):
    m = cls(*args).double()
    assert m.weight.dtype == numpy.float64
    assert m(Tensor(numpy.zeros((1, 3, 5, 5)))).dtype == numpy.float64


def test_conv1d_and_batchnorm1d_modules():
    conv = nn.Conv1d(3, 4, 5, stride=2, padding=2, groups=1)
    assert conv.weight.shape == (4, 3, 5) and list(conv.state_dict()) == ["weight", "bias"]
    assert abs(conv.weight.numpy()).max() <= 1 / numpy.sqrt(15)            # PyTorch's default bound
    x = _x(2, 3, 11)
    y = conv(x)
    assert y.shape == (2, 4, 6)
    ref = F.conv2d(x.unsqueeze(2), conv.weight.unsqueeze(2), conv.bias, (1, 2), (0, 2)).squeeze(2)
    numpy.testing.assert_allclose(y.numpy(), ref.numpy(), rtol=1e-6)
    assert nn.Conv1d(3, 2, 3, padding="same", padding_mode="reflect", bias=False)(x).shape == (2, 2, 11)
    assert nn.Conv1d(3, 2, 3, padding=1, padding_mode="circular")(x).shape == (2, 2, 11)
    bn = nn.BatchNorm1d(4)
    z = bn(y)
    numpy.testing.assert_allclose(z.numpy().mean((0, 2)), 0, atol=1e-5)
    assert bn(y.mean(-1)).shape == (2, 4) and int(bn.num_batches_tracked.item()) == 2
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected a 2-D or 3-D input, got shape \(2, 4, 6, 1\)"):
        bn(y.unsqueeze(-1))
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected a 4-D input"):
        nn.BatchNorm2d(4)(y)
    with pytest.raises(ValueError, match="conv1d: expected 3-D input"):
        conv(x.unsqueeze(0))
