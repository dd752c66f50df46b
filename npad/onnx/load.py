"""Reading an ONNX file: the ModelProto, validated, with its external data, and the graph's nodes.

Every refusal names the file: a missing file (FileNotFoundError), one that is not ONNX, truncated
or corrupt, an external data file that is missing or lies outside the model's folder, NaN or inf
in a float initializer or Constant (:class:`OnnxLoadError`), an op the table lacks
(:class:`UnsupportedOpError`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .graph import Node

__all__ = ["load_onnx", "read_nodes", "OnnxLoadError", "UnsupportedOpError", "OnnxRuntimeError", "list_values"]


class OnnxLoadError(ValueError):
    """The file is missing pieces, is truncated, or is not an ONNX model."""


class UnsupportedOpError(NotImplementedError):
    """The graph holds an op the importer has no implementation for."""


class OnnxRuntimeError(RuntimeError):
    """A node failed while running; the message names the node and its op."""


def list_values(onnx_path, input_shape=(1, 3, 224, 224), input_name=None):
    """Every value of an ONNX file with its inferred shape (see :func:`npad.backbones.list_values`)."""
    from ..backbones import list_values as _lv
    return _lv(onnx_path, input_shape, input_name)


def load_onnx(path):
    """Read and validate an ONNX file (external data included); returns the ModelProto.

    Errors name the file: FileNotFoundError when it is missing, :class:`OnnxLoadError`
    when it cannot be parsed, is not an ONNX model, is truncated, its external data file is
    missing or outside the model's folder, or a float initializer or Constant holds NaN or inf."""
    import onnx
    if not isinstance(path, (str, Path)):
        if isinstance(path, onnx.ModelProto):
            _validate(path, "<ModelProto>")
            return path
        raise TypeError(f"load_onnx: expected a path or onnx.ModelProto, got {type(path).__name__}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"ONNX file not found: {p}")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001 (protobuf DecodeError and friends)
        raise OnnxLoadError(f"{p}: not a readable ONNX model (truncated or not ONNX?): "
                            f"{type(e).__name__}: {e}") from e
    if not model.HasField("graph") or not model.ir_version:
        raise OnnxLoadError(f"{p}: not an ONNX model (no graph / IR version); is it the right file?")
    ext = [t for t in _all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]
    if ext:
        from onnx.external_data_helper import load_external_data_for_model
        folder = p.parent.resolve()
        for t in ext:
            loc = next((e.value for e in t.external_data if e.key == "location"), None)
            # a hostile file could name any file on the machine (an absolute path, "../..")
            if loc is not None and (Path(loc).is_absolute() or not (folder / loc).resolve().is_relative_to(folder)):
                raise OnnxLoadError(f"{p}: initializer {t.name!r} names the external data file {loc!r}, "
                                    f"which lies outside the model's folder {folder}; refused")
            if loc is None or not (p.parent / loc).is_file():
                raise OnnxLoadError(f"{p}: initializer {t.name!r} is stored in the external data file "
                                    f"{loc!r}, which is missing (expected it at {p.parent / str(loc)})")
        try:
            load_external_data_for_model(model, str(p.parent))
        except Exception as e:  # noqa: BLE001
            raise OnnxLoadError(f"{p}: cannot read its external data: {type(e).__name__}: {e}") from e
    _validate(model, str(p))
    return model


def _all_tensors(model):
    for t in model.graph.initializer:
        yield t
    for node in model.graph.node:
        for a in node.attribute:
            if a.HasField("t"):
                yield a.t


def _validate(model, where):
    """Refuse graphs that use undefined values, truncated initializers and non-finite float weights."""
    import onnx
    from onnx import numpy_helper
    g = model.graph
    if not g.node:
        raise OnnxLoadError(f"{where}: the graph has no nodes (truncated or empty model?)")
    known = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    for node in g.node:
        for i in node.input:
            if i not in known:
                raise OnnxLoadError(f"{where}: node {node.name!r} ({node.op_type}) uses value {i!r} that no "
                                    "earlier node, input or initializer defines (truncated or corrupt file?)")
        known.update(node.output)
    for o in g.output:
        if o.name not in known:
            raise OnnxLoadError(f"{where}: graph output {o.name!r} is never computed (truncated file?)")
    for t in g.initializer:
        raw = len(t.raw_data)
        if raw:
            n = int(np.prod(t.dims, dtype=np.int64))
            itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
            if raw != n * itemsize:
                raise OnnxLoadError(f"{where}: initializer {t.name!r} holds {raw} bytes, its shape {list(t.dims)} "
                                    f"needs {n * itemsize} (truncated file?)")
    named = [(f"initializer {t.name!r}", numpy_helper.to_array(t)) for t in g.initializer]
    for n in g.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            try:
                named.append((f"Constant {n.name or n.output[0]!r}", constant_value(attributes(n))))
            except (NotImplementedError, ValueError):
                pass   # refused with its node's name when the nodes are read
    for what, a in named:
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise OnnxLoadError(f"{where}: {what} holds NaN or inf ({int((~np.isfinite(a)).sum())} of "
                                f"{a.size} values); refused (a corrupt or unfinished model?)")


def attributes(node):
    """{name: value} of an ONNX node's attributes (tensors as NumPy arrays, strings decoded)."""
    import onnx
    from onnx import numpy_helper
    out = {}
    for a in node.attribute:
        v = onnx.helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode()
        elif isinstance(v, onnx.TensorProto):
            v = numpy_helper.to_array(v)
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode() for s in v]
        out[a.name] = v
    return out


def constant_value(attrs):
    """The NumPy value of a Constant node's attributes."""
    if "sparse_value" in attrs:
        raise NotImplementedError("Constant: sparse_value is not supported")
    if "value" in attrs:
        return np.asarray(attrs["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                       ("value_ints", np.int64), ("value_string", None), ("value_strings", None)):
        if key in attrs:
            return np.array(attrs[key], dtype)
    raise ValueError("Constant node without a value attribute")


def read_nodes(proto, source, supported):
    """(nodes, initializers, opset) of a ModelProto: local functions inlined, Constant nodes turned
    into initializers (so weights written as Constants train too), every op checked against
    ``supported``; the error lists each unsupported op once."""
    from onnx import numpy_helper
    if proto.functions:
        import onnx.inliner
        proto = onnx.inliner.inline_local_functions(proto)
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 1)
    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    nodes, unknown = [], []
    for k, nd in enumerate(proto.graph.node):
        name = nd.name or f"{nd.op_type}_{k}"
        if nd.domain not in ("", "ai.onnx") or nd.op_type not in supported:
            unknown.append((nd.op_type if nd.domain in ("", "ai.onnx") else f"{nd.domain}::{nd.op_type}", name))
        elif nd.op_type == "Constant":
            try:
                inits[nd.output[0]] = constant_value(attributes(nd))
            except (NotImplementedError, ValueError) as e:
                raise UnsupportedOpError(f"{source}: node {name!r} (Constant): {e}") from e
        else:
            nodes.append(Node(nd.op_type, name, [i or None for i in nd.input], nd.output, attributes(nd), opset))
    if unknown:
        ops = sorted({u[0] for u in unknown})
        raise UnsupportedOpError(
            f"{source}: unsupported ONNX op(s) {ops} (first at node {unknown[0][1]!r}, op {unknown[0][0]}; "
            f"{len(unknown)} node(s) in all). Supported ops: {', '.join(sorted(supported))}")
    return nodes, inits, opset
