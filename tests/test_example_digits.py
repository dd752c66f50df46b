"""examples/digits_cnn.py, the PyTorch-habits teaching example, runs and learns (two epochs here)."""
import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "digits_cnn.py"


def test_digits_cnn_learns(capsys):
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("digits_cnn", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    accuracy = example.main(epochs=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[-1].startswith("epoch  2  train loss")
    assert accuracy > 0.8                                      # 12 epochs reach about 98%
