"""weights/export_torchvision.py's pieces that need no torchvision: the weights tag it writes into the file,
reflection padding (the CFLOW-AD authors' ResNet) through torch's exporter and npad's importer, and paper
mode's check of the tag (npad.backbones.require_weights)."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning:torch")
pytest.importorskip("onnx")

from npad import backbones as B  # noqa: E402
from npad.backend import to_cpu  # noqa: E402
from npad.onnx import OnnxModule  # noqa: E402
from npad.tensor import Tensor, no_grad  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[1] / "weights" / "export_torchvision.py"


@pytest.fixture(scope="module")
def export():
    spec = importlib.util.spec_from_file_location("export_torchvision", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_papers_weights_are_the_default(export, tmp_path):
    assert export.PAPER_WEIGHTS == "IMAGENET1K_V1"
    assert export.weights_tag("resnet18", "none") == (None, "none")
    pth = tmp_path / "mine.pth"
    pth.write_bytes(b"x")
    assert export.weights_tag("resnet18", str(pth)) == (str(pth), "file:mine.pth")


def test_reflect_padding_exports_and_imports_exactly(export, tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 7, 2, 3, bias=False), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3, 1, 1), torch.nn.Conv2d(4, 2, 1)).eval()
    export.set_padding_mode(net, "reflect")
    assert [m.padding_mode for m in net if isinstance(m, torch.nn.Conv2d)] == ["reflect", "reflect", "zeros"]
    path = str(tmp_path / "net.onnx")
    x = torch.rand(2, 3, 20, 24)
    torch.onnx.export(net, (x,), path, dynamo=False, input_names=["input"], output_names=["out"], opset_version=17)
    export.add_metadata(path, {"npad.weights": "torchvision:IMAGENET1K_V1", "npad.padding": "reflect"})
    assert B.onnx_weights(path) == "torchvision:IMAGENET1K_V1"
    with no_grad():
        got = OnnxModule(path)(Tensor(x.numpy()))
    with torch.no_grad():
        want = net(x).numpy()
    np.testing.assert_allclose(to_cpu(got.data), want, rtol=1e-5, atol=1e-5)
    zero = export.set_padding_mode(net, "zeros")
    with torch.no_grad():
        assert not np.allclose(zero(x).numpy(), want)                   # the padding matters at the borders


def test_require_weights_refuses_other_weights(tmp_path, monkeypatch):
    def file_with(tag):
        path = tmp_path / f"{tag or 'plain'}.onnx".replace(":", "_")
        net = torch.nn.Conv2d(3, 64, 3, 4, 1)
        torch.onnx.export(net, (torch.rand(1, 3, 8, 8),), str(path), dynamo=False, input_names=["input"],
                          output_names=["layer1"], opset_version=17)
        if tag:
            import onnx
            m = onnx.load(str(path))
            m.metadata_props.add(key="npad.weights", value=tag)
            onnx.save(m, str(path))
        return path
    good = file_with("torchvision:IMAGENET1K_V1")
    assert B.require_weights("resnet18", "torchvision:IMAGENET1K_V1", good) == good
    with pytest.raises(ValueError, match="V2.*the paper used 'torchvision:IMAGENET1K_V1'.*export_torchvision"):
        B.require_weights("resnet18", "torchvision:IMAGENET1K_V1", file_with("torchvision:IMAGENET1K_V2"))
    with pytest.warns(UserWarning, match="does not say which weights"):
        B.require_weights("resnet18", "torchvision:IMAGENET1K_V1", file_with(None))
    monkeypatch.setenv("NPAD_WEIGHTS", str(tmp_path / "none"))
    monkeypatch.setenv("NPAD_CACHE", str(tmp_path / "none"))
    monkeypatch.delenv("NPAD_RESNET18_ONNX", raising=False)
    with pytest.raises(FileNotFoundError, match="export_torchvision.py resnet18"):
        B.require_weights("resnet18", "torchvision:IMAGENET1K_V1")
