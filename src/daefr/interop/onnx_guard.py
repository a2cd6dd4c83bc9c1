"""Check an ONNX file before ONNX Runtime opens it: standard operators only, external data inside its folder.

An ONNX file is a graph of operators, not code: ONNX Runtime runs nothing at load and can run only the
operators it ships (daefr never registers a custom-operator library). What a file can still ask for:

* *external data*: an initializer (or constant) may name a file by ``location`` (``../../etc/passwd``,
  ``/root/.ssh/id_rsa``, a symlink out of the folder) whose bytes the runtime then reads as weights;
* *custom operator domains*: nodes in a domain other than the standard ones need a library that we
  never load, and would otherwise fail deep inside the runtime;
* a graph that the ONNX checker rejects.

:func:`check_onnx_file` refuses each of them with one line naming the file and the reason: external
data must be a relative path to a regular file inside the model's own folder (after resolving
symlinks), every node must be in a standard domain (or a function defined in the file itself), and
``onnx.checker.check_model`` must pass. Only the protobuf is parsed (``load_external_data=False``),
then the checker parses it again from the path; each holds about twice the file size at its peak, one
after the other, and the first is handed back to the OS before the second (figures:
``benchmarks/onnx_guard_cost.py``).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from daefr.errors import CheckpointError, UnsafeFileError

__all__ = ["STANDARD_DOMAINS", "check_onnx_file"]

#: Operator domains of the ONNX standard (``""`` and ``ai.onnx`` are the same default domain).
STANDARD_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml"})


def _graphs(graph: Any) -> Iterator[Any]:
    """``graph`` and every subgraph of its nodes (``If`` / ``Loop`` / ``Scan`` bodies), depth first."""
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _tensors(proto: Any) -> Iterator[Any]:
    """Every TensorProto that may carry data: initializers, sparse initializers, tensor attributes."""
    nodes = [n for g in _graphs(proto.graph) for n in g.node] + [n for f in proto.functions for n in f.node]
    for graph in _graphs(proto.graph):
        yield from graph.initializer
        for sparse in graph.sparse_initializer:
            yield sparse.values
            yield sparse.indices
    for node in nodes:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("sparse_tensor"):
                yield attr.sparse_tensor.values
                yield attr.sparse_tensor.indices


def _check_location(path: Path, tensor: Any) -> None:
    """Refuse external data of ``tensor`` that lies outside ``path``'s folder or is not a regular file."""
    entries = {e.key: e.value for e in tensor.external_data}
    location = entries.get("location", "")
    name = tensor.name or "<unnamed>"
    if not location:
        raise UnsafeFileError(f"{path}: refused: tensor {name!r} is marked external but names no data file")
    folder = os.path.realpath(path.parent)
    target = os.path.realpath(os.path.join(folder, location))
    if os.path.isabs(location) or ".." in Path(location).parts or os.path.commonpath([folder, target]) != folder:
        raise UnsafeFileError(f"{path}: refused: tensor {name!r} reads its data from {location!r}, outside the "
                              "model's folder; daefr reads external data only from files beside the .onnx")
    if not os.path.isfile(target):
        raise CheckpointError(f"{path}: tensor {name!r} needs the external data file {location!r}, which is missing "
                              "or not a regular file; copy it beside the .onnx")
    try:
        end = int(entries.get("offset") or 0) + int(entries.get("length") or 0)
    except ValueError:
        raise CheckpointError(f"{path}: tensor {name!r} has a non-numeric external data offset or length") from None
    if end > os.path.getsize(target):
        raise CheckpointError(f"{path}: tensor {name!r} reads past the end of {location!r} (truncated data file?)")


def _check_proto(path: Path, proto: Any) -> None:
    """Operator domains and external-data locations of the parsed model ``proto`` (see the module doc)."""
    import onnx

    local = {(f.domain, f.name) for f in proto.functions}
    local_domains = {domain for domain, _ in local}
    for opset in proto.opset_import:
        if opset.domain not in STANDARD_DOMAINS and opset.domain not in local_domains:
            raise UnsafeFileError(f"{path}: refused: it imports the custom operator domain {opset.domain!r}; "
                                  "daefr runs only standard ONNX operators (re-export it with `daefr export`)")
    nodes = [n for g in _graphs(proto.graph) for n in g.node] + [n for f in proto.functions for n in f.node]
    for node in nodes:
        if node.domain not in STANDARD_DOMAINS and (node.domain, node.op_type) not in local:
            raise UnsafeFileError(f"{path}: refused: node {node.name or node.op_type!r} is the custom operator "
                                  f"{node.domain}::{node.op_type}; daefr runs only standard ONNX operators")
    for tensor in _tensors(proto):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            _check_location(path, tensor)


def check_onnx_file(path: str | Path) -> None:
    """Check that ``path`` is a safe, valid ONNX model of standard operators; raise a one-line error if not.

    Raise a one-line :class:`~daefr.errors.CheckpointError` / :class:`~daefr.errors.UnsafeFileError`
    unless ``path`` is a checker-valid ONNX model of standard operators whose external data (if any) lies
    in its own folder. Nothing is run; the external data is not read.
    """
    import onnx
    from google.protobuf.message import DecodeError

    from daefr.utils.hub import require_regular_file

    path = Path(path)
    require_regular_file(path, "ONNX model")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except (DecodeError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    try:
        _check_proto(path, proto)
    finally:
        # every message of the parse shares one arena: it is freed only when no reference is left
        del proto
        gc.collect()
        from daefr.interop.export import release_freed_heap

        release_freed_heap()  # the parse (about the file size) goes back to the OS before the checker's own
    try:
        onnx.checker.check_model(str(path))  # from the path: models over 2 GB and their external data too
    except (onnx.checker.ValidationError, OSError, ValueError, RuntimeError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise CheckpointError(f"{path}: not a valid ONNX model (the ONNX checker says: {reason})") from None
