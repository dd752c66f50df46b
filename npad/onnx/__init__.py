"""ONNX importer: run an ``.onnx`` graph as an npad Module.

>>> from npad.onnx import OnnxModule
>>> net = OnnxModule("resnet18.onnx", frozen=True)            # doctest: +SKIP
>>> with npad.no_grad():                                        # doctest: +SKIP
...     f1, f2 = net(x, taps=["layer1", "layer2"])
>>> a, = net.run(x, ["layer3"])                                 # doctest: +SKIP
>>> out, = net.run(x, ["logits"], overrides={"layer3": a_with_grad})   # doctest: +SKIP

A reader's map, in the order a file travels:

* ``load.py``: :func:`load_onnx` reads and validates the file (external data inside the model's
  folder, sizes of initializers, no NaN/inf weights, every value defined before use); ``read_nodes``
  inlines local functions, turns Constant nodes into initializers and checks every op against the
  table. The error classes live here.
* ``fold.py``: ``frozen=True`` folds each BatchNormalization into the convolution in front of it,
  ``w' = w g / sqrt(v + eps)``, ``b' = (b - m) g / sqrt(v + eps) + beta``; ``constant_nodes`` picks the
  shape arithmetic (``Shape`` of anything, nodes of constants only) that runs once per input shape.
* ``graph.py``: the nodes in order and which node produces each value; ``needed`` prunes a run to the
  nodes its outputs need (everything past the deepest tap is skipped), ``schedule`` marks where each
  value dies, so it is dropped right after its last use.
* ``ops.py``: the op table :data:`OPS`, op type -> a short function calling :mod:`npad.functional`;
  it translates ONNX's attributes (auto_pad, opset differences, Resize's coordinate modes) and holds
  no maths of its own.
* ``module.py``: :class:`OnnxModule`: float initializers feeding computation become parameters
  (BatchNorm statistics: buffers; names sanitized, ``"layer1.0.conv1.weight"`` ->
  ``"layer1_0_conv1_weight"``), shape-like ones stay NumPy constants; ``forward``, :meth:`~OnnxModule.run`
  (named outputs, overrides), :meth:`~OnnxModule.register_value_hook`; plans are cached per input shape.
* ``run.py``: the interpreter loop: each step reads its inputs, calls its op, stores its outputs,
  drops the values that die.
* ``fast.py``: the execution strategies beside it for forwards that record nothing: ops writing into
  an input that dies at them, threaded single-pass Clip/Relu, and the batch split (each thread runs
  the whole graph on a slice of the batch with one BLAS thread; only after ``npad.tune_cpu()``).
  Deleting it (and its two call sites) leaves a correct, slower importer.

``frozen=False`` keeps BatchNorm as ``F.batch_norm`` in eval mode and makes every parameter
trainable, so gradients reach all of them.
"""
from .load import OnnxLoadError, OnnxRuntimeError, UnsupportedOpError, list_values, load_onnx
from .module import OnnxModule
from .ops import OPS, supported_ops

__all__ = ["OnnxModule", "load_onnx", "OPS", "supported_ops", "UnsupportedOpError",
           "OnnxLoadError", "OnnxRuntimeError", "list_values"]
