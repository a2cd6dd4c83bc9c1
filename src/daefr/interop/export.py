"""Export the DAEFR restorer to ONNX, TorchScript or a torch.export ExportedProgram, and check the result.

Exported graph: ``lq (B, 3, S, S) float32 in [-1, 1]`` -> ``restored (B, 3, S, S) float32`` (unclamped)
and ``indices (B, T) int64`` (the top-1 HQ codebook codes, T = (S / 32)^2 = 256 for the released model).
``batch=None`` exports a dynamic batch dimension, an int fixes it. ``fast`` exports the fast-path graph
(``DAEFRRestorer.set_fast``: fused blocks, sub-pixel upsampling, argmax), else the parity graph; both
are the restorer's one forward (``forward_intermediates``).

Op notes (what needed care to export):

* top-1 selection: the parity graph's ``topk(softmax(logits), 1)`` and the fast graph's ``argmax`` both
  export as they are (ONNX ``TopK``/``ArgMax``); nothing was rewritten.
* codebook lookup: ``nn.Embedding`` on the indices exports as ``Gather``; nothing was rewritten.
* the parity graph's straight-through sum ``fused + (quant - fused).detach()`` exports as two
  element-wise ops (``detach`` is the identity at inference);
* attention: ``scaled_dot_product_attention`` (fast graph) and the explicit softmax attention both export.
* ONNX export uses the TorchScript-based (tracing) exporter by default (opset 17); the dynamo exporter
  is available as ``exporter="dynamo"``; weights over 1.8 GB go to an external data file next to the
  ``.onnx`` (protobuf's 2 GB limit).

Trust (docs/reliability.md): ONNX and ExportedProgram files are data, checked before they are opened
(:mod:`daefr.interop.onnx_guard`, :mod:`daefr.interop.pt2_guard`); a TorchScript file is a program
and runs only with ``trust_code=True`` (or when this process exported it). Exports are written through
:func:`daefr.utils.io.atomic_path`; a temporary left by a killed export is removed by the next export
into that folder.

:func:`check_export` runs the exported file (ONNX Runtime for ONNX) against the eager graph and
reports max |difference| of the restored images and the share of identical codes;
:data:`DEFAULT_TOLERANCE` (1e-3 on [-1, 1] images, >= 99% identical codes) is the pass mark.
"""

from __future__ import annotations

import copy
import ctypes
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn

from daefr.errors import ConfigError, DaefrError, UnsafeFileError

__all__ = ["DEFAULT_TOLERANCE", "EXPORT_FORMATS", "ONNX_SESSION_DEFAULTS", "ExportCheck", "ExportableRestorer",
           "OnnxRunner", "check_export", "export_restorer", "load_exported", "onnx_session_options",
           "read_export_metadata", "release_freed_heap"]

#: Format name -> file suffix.
EXPORT_FORMATS: dict[str, str] = {"onnx": ".onnx", "torchscript": ".ts", "exported-program": ".pt2"}
#: Pass marks of :func:`check_export`: max |restored difference| and share of identical codes.
DEFAULT_TOLERANCE: dict[str, float] = {"max_abs": 1e-3, "code_agreement": 0.99}
_META_FILE = "daefr_export.json"


class ExportableRestorer(nn.Module):
    """The restorer's inference graph with tensor-only outputs: lq (B, 3, S, S) -> (restored, indices (B, T))."""

    def __init__(self, restorer: nn.Module, *, fast: bool) -> None:
        super().__init__()
        self.restorer = restorer
        self.fast = bool(fast)

    def forward(self, lq: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, S, S) in [-1, 1] -> restored (B, 3, S, S), indices (B, T) int64."""
        details = cast(Any, self.restorer).forward_intermediates(lq)
        return details["restored"], details["indices"]


def _prepare(restorer: nn.Module, fast: bool, *, in_place: bool = False) -> ExportableRestorer:
    """A converted deep copy (the caller's restorer is left as it is), or ``restorer`` itself converted."""
    model = (restorer if in_place else copy.deepcopy(restorer)).eval()
    getattr(model, "set_fast")(fast)  # noqa: B009 - the restorer's one fast-path switch
    for p in model.parameters():
        p.requires_grad_(False)
    return ExportableRestorer(model, fast=fast).eval()


def _metadata(restorer: nn.Module, fmt: str, batch: int | None, fast: bool) -> dict[str, str]:
    from daefr import __version__

    size = getattr(restorer, "input_size", None)
    return {"format": "daefr.exported_restorer", "export_format": fmt, "daefr_version": __version__,
            "input_size": str(size), "batch": "dynamic" if batch is None else str(batch), "fast": str(fast).lower(),
            "arch": json.dumps(getattr(restorer, "arch", None), sort_keys=True),
            "outputs": "restored (B,3,S,S) float32 unclamped [-1,1]; indices (B,T) int64"}


def export_restorer(restorer: nn.Module, path: str | Path, fmt: str = "onnx", *, batch: int | None = None,
                    fast: bool = False, opset: int = 17, exporter: str = "torchscript",
                    overwrite: bool = False, in_place: bool = False) -> Path:
    """Export ``restorer`` (a DAEFRRestorer) to ``path`` as ONNX, TorchScript or an ExportedProgram.

    ``fmt``: one of (``onnx``, ``torchscript``,
    ``exported-program``); ``batch=None`` makes the batch dimension dynamic. Returns the path written.

    ONNX: ``exporter="torchscript"`` (default; the tracing exporter, the quicker one to export here) or
    ``"dynamo"`` (``torch.export`` based, opset >= 18); both give the same graph to within rounding.

    The file is written to a temporary name in the same folder and moved into place (atomic).
    ``in_place=True`` converts ``restorer`` itself instead of a deep copy (one copy of the weights less in
    memory; for callers that discard the restorer afterwards: it is left converted for the export).
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")
    if exporter not in ("torchscript", "dynamo"):
        raise ConfigError(f"unknown ONNX exporter {exporter!r}; use torchscript or dynamo")
    if batch is not None and batch < 1:
        raise ConfigError(f"batch must be >= 1 (or None for a dynamic batch), got {batch}")
    size = getattr(restorer, "input_size", None)
    if not isinstance(size, int):
        raise ConfigError("the restorer has no square input size (input_size); export needs a fixed face size")
    path = Path(path)
    from daefr.utils.io import atomic_path, clean_orphaned_temps, is_special_file

    if is_special_file(path):  # an export is renamed into place: that would replace a FIFO or device
        raise ConfigError(f"{path} is a special file (FIFO, device, /dev/...); export to a regular file path")
    if path.exists() and not overwrite:
        raise ConfigError(f"{path} exists; pass overwrite=True (--force) to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = _metadata(restorer, fmt, batch, fast)
    model = _prepare(restorer, fast, in_place=in_place)
    # a dynamic batch is traced at 2: torch.export specialises a dimension of size 1
    example = torch.zeros(2 if batch is None else batch, 3, size, size)
    # a temporary of a killed export in this folder (its writer's lock is gone) is removed first
    clean_orphaned_temps(path.parent)
    try:
        # the temporary name keeps the suffix: torch.export.save insists on ".pt2"
        with atomic_path(path, overwrite=overwrite, suffix=".tmp" + EXPORT_FORMATS[fmt]) as tmp, torch.no_grad():
            if fmt == "onnx":
                _export_onnx(model, example, tmp, path.name, batch, opset, meta, exporter)
            elif fmt == "torchscript":
                traced = torch.jit.trace(model, (example,), check_trace=False)
                traced = torch.jit.freeze(traced.eval())
                torch.jit.save(traced, str(tmp), _extra_files={_META_FILE: json.dumps(meta)})
            else:
                program = _torch_export(model, example, batch)
                torch.export.save(program, str(tmp), extra_files={_META_FILE: json.dumps(meta)})
    except FileExistsError:  # another writer took the name meanwhile
        raise ConfigError(f"{path} exists; pass overwrite=True (--force) to replace it") from None
    _OWN_FILES.add(_fingerprint(path))
    return path


def _torch_export(model: nn.Module, example: Tensor, batch: int | None) -> Any:
    dynamic = {"lq": {0: torch.export.Dim("batch", min=1, max=4096)}} if batch is None else None
    return torch.export.export(model, (example,), dynamic_shapes=dynamic, strict=False)


def _export_onnx(model: nn.Module, example: Tensor, tmp: Path, name: str, batch: int | None, opset: int,
                 meta: dict[str, str], exporter: str) -> None:
    """Write the ONNX export of ``model`` to ``tmp``.

    The final file is ``name`` (an external data file,
    for weights over protobuf's 2 GB limit, is named after it since the graph refers to it by name).
    """
    import warnings

    import onnx

    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    external = n_bytes > 1_800_000_000  # protobuf's 2 GB limit
    names = {"input_names": ["lq"], "output_names": ["restored", "indices"], "opset_version": opset}
    if exporter == "dynamo":
        dynamic = {"lq": {0: torch.export.Dim("batch", min=1, max=4096)}} if batch is None else None
        program = torch.onnx.export(model, (example,), None, dynamo=True, dynamic_shapes=dynamic, optimize=True,
                                    verbose=False, **names)  # type: ignore[arg-type]
        if program is None:
            raise DaefrError("torch.onnx.export returned no program")
        proto = program.model_proto
    else:
        axes = {io: {0: "batch"} for io in ("lq", "restored", "indices")} if batch is None else None
        with warnings.catch_warnings():  # the TorchScript exporter's deprecation and tracer notes
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), dynamo=False, dynamic_axes=axes,
                              do_constant_folding=True, **names)  # type: ignore[arg-type]
        if not external:
            # the metadata is appended as serialised ModelProto fields (protobuf merges concatenated
            # messages): loading and re-saving the whole file would hold two more copies of the weights
            extra = onnx.ModelProto()
            for key, value in meta.items():
                entry = extra.metadata_props.add()
                entry.key, entry.value = key, value
            with tmp.open("ab") as fh:
                fh.write(extra.SerializeToString())
            return
        proto = onnx.load(str(tmp))
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    if external:
        # the data file gets its final name at once: the graph refers to it by name
        onnx.save_model(proto, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=name + ".data")
    else:
        onnx.save_model(proto, str(tmp))


def read_export_metadata(path: str | Path) -> dict[str, str]:
    """The metadata stored by :func:`export_restorer` (``input_size``, ``batch``, ``fast``, ...); {} if none.

    Read without running anything: the ONNX protobuf without its external data, the ``extra/`` member of a
    TorchScript or ExportedProgram zip (a TorchScript file is never loaded for this: loading runs its code).
    """
    import zipfile

    path = Path(path)
    fmt = _format_of(path)
    try:
        if fmt == "onnx":
            import onnx

            proto = onnx.load(str(path), load_external_data=False)
            return {p.key: p.value for p in proto.metadata_props}
        if fmt == "exported-program":
            from daefr.interop.pt2_guard import check_pt2_archive

            check_pt2_archive(path)
        return cast(dict[str, str], json.loads(_zip_extra_file(path, _META_FILE) or "{}"))
    except (OSError, RuntimeError, ValueError, zipfile.BadZipFile) as exc:
        raise DaefrError(f"{path}: cannot read the exported model ({type(exc).__name__}: {exc})") from None


def _zip_extra_file(path: Path, name: str) -> str:
    """The text of an ``extra/`` record of a TorchScript / ExportedProgram zip, without loading the model.

    The text of ``<root>/extra/<name>`` in a TorchScript / ExportedProgram zip ("" when absent or over
    1 MiB), read from the zip directly: nothing of the model is loaded.
    """
    import zipfile

    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.filename.split("/", 1)[-1] == f"extra/{name}" and info.file_size < 1 << 20:
                return archive.read(info).decode("utf-8")
    return ""


def _fingerprint(path: Path) -> tuple[int, int, int, int]:
    """(device, inode, size, mtime in ns) of ``path``: changes when the file is replaced or rewritten."""
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


#: Fingerprints of the files :func:`export_restorer` wrote in this process: TorchScript files that are
#: run without ``trust_code`` (this process made them from a model it had loaded as data).
_OWN_FILES: set[tuple[int, int, int, int]] = set()


def _require_trusted_torchscript(path: Path, trust_code: bool) -> None:
    """Refuse a TorchScript file unless ``trust_code`` or it is an unchanged export of this process."""
    if trust_code or _fingerprint(path) in _OWN_FILES:
        return
    raise UnsafeFileError(
        f"{path}: refused: a TorchScript file is a program (its code runs when it is loaded and run, and can "
        "read or write files); daefr runs one only when you trust its author (`daefr restore --trust-torchscript`, "
        "trust_code=True in Python), else use the "
        ".onnx or .safetensors export of the model")


def _format_of(path: Path) -> str:
    for fmt, suffix in EXPORT_FORMATS.items():
        if path.name.endswith(suffix):
            return fmt
    raise ConfigError(f"{path}: unknown exported-model suffix; expected one of {', '.join(EXPORT_FORMATS.values())}")


#: ONNX Runtime session settings of :func:`load_exported` (CPU): a lower peak memory than ONNX Runtime's
#: own defaults at the same speed (measured settings and figures: ``benchmarks/RESULTS.md``, "What was
#: tried for the ONNX Runtime peak").
ONNX_SESSION_DEFAULTS: dict[str, Any] = {
    # "all" adds the NCHWc convolution layouts: the fastest level here ("extended" / "basic" cost more time)
    "graph_optimization_level": "all",
    # off, every activation is a fresh zero-filled mapping: much more CPU time per face for little memory
    "enable_cpu_mem_arena": True,
    # on, ONNX Runtime plans one block per input shape and allocates it beside the arena's free chunks:
    # more memory, growing over the first runs, and no measurable speed gain for this graph
    "enable_mem_pattern": False,
    # ONNX Runtime parses the whole .onnx into the heap, copies the weights out and frees the parse, but
    # glibc keeps those pages (about the file size): hand them back to the OS
    "release_freed_heap": True,
    "execution_mode": "sequential",
}
_ORT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED",
               "all": "ORT_ENABLE_ALL"}
_ORT_MODES = {"sequential": "ORT_SEQUENTIAL", "parallel": "ORT_PARALLEL"}


def release_freed_heap() -> bool:
    """Return the heap memory this process has freed to the OS (glibc ``malloc_trim``); False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        trim = ctypes.CDLL(None).malloc_trim  # glibc only (musl has no malloc_trim)
    except (OSError, AttributeError):
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


def onnx_session_options(options: dict[str, Any] | None = None, *, threads: int | None = None,
                         spin: bool = False) -> tuple[Any, dict[str, Any]]:
    """(``onnxruntime.SessionOptions``, the settings used): :data:`ONNX_SESSION_DEFAULTS` updated by ``options``."""
    import onnxruntime as ort

    settings = {**ONNX_SESSION_DEFAULTS, **(options or {})}
    unknown = sorted(set(settings) - set(ONNX_SESSION_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown ONNX Runtime option(s) {', '.join(unknown)}; use {', '.join(ONNX_SESSION_DEFAULTS)}")
    level, mode = str(settings["graph_optimization_level"]), str(settings["execution_mode"])
    if level not in _ORT_LEVELS:
        raise ConfigError(f"graph_optimization_level {level!r}: use one of {', '.join(_ORT_LEVELS)}")
    if mode not in _ORT_MODES:
        raise ConfigError(f"execution_mode {mode!r}: use one of {', '.join(_ORT_MODES)}")
    opts = ort.SessionOptions()
    opts.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _ORT_LEVELS[level])
    opts.execution_mode = getattr(ort.ExecutionMode, _ORT_MODES[mode])
    opts.enable_cpu_mem_arena = bool(settings["enable_cpu_mem_arena"])
    opts.enable_mem_pattern = bool(settings["enable_mem_pattern"])
    if threads:
        opts.intra_op_num_threads = int(threads)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    return opts, settings


class OnnxRunner:
    """An ONNX Runtime session as a callable ``lq (B, 3, S, S) tensor -> (restored, indices)``.

    ``session`` is the ``onnxruntime.InferenceSession``, ``settings`` the :data:`ONNX_SESSION_DEFAULTS`
    it was built with (after overrides).
    """

    def __init__(self, path: Path, options: dict[str, Any] | None = None, *, threads: int | None = None,
                 spin: bool = False) -> None:
        import onnxruntime as ort

        from daefr.interop.onnx_guard import check_onnx_file

        check_onnx_file(path)  # standard operators, external data beside the file, checker-valid
        opts, self.settings = onnx_session_options(options, threads=threads, spin=spin)
        self.session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        if self.settings["release_freed_heap"]:
            release_freed_heap()

    def __call__(self, lq: Tensor) -> tuple[Tensor, Tensor]:
        """(B, 3, S, S) in [-1, 1] -> restored (B, 3, S, S) float32, indices (B, T) int64 (CPU tensors)."""
        outs = self.session.run(["restored", "indices"], {"lq": lq.detach().float().cpu().contiguous().numpy()})
        return torch.from_numpy(outs[0]), torch.from_numpy(outs[1])


def load_exported(path: str | Path, fmt: str | None = None, *, threads: int | None = None,
                  spin: bool = False, onnx_options: dict[str, Any] | None = None, trust_code: bool = False) -> Any:
    """A callable ``lq (B, 3, S, S) tensor -> (restored, indices)`` running the exported file.

    ONNX files run in ONNX Runtime (CPU, an :class:`OnnxRunner`; ``threads`` sets its intra-op threads;
    ``spin`` lets idle worker threads busy-wait, which helps only on an otherwise idle machine;
    ``onnx_options`` overrides :data:`ONNX_SESSION_DEFAULTS`), TorchScript and ExportedProgram files in torch.

    Every file is checked first (nothing of it runs before): ONNX by
    :func:`daefr.interop.onnx_guard.check_onnx_file`, ExportedProgram by
    :func:`daefr.interop.pt2_guard.check_pt2_archive`. TorchScript is code: it is refused
    (:class:`~daefr.errors.UnsafeFileError`) unless ``trust_code=True`` or this process exported it.
    """
    path = Path(path)
    if not path.is_file():
        raise DaefrError(f"exported model not found: {path}; create it with `daefr export`")
    fmt = fmt or _format_of(path)
    if fmt == "onnx":
        return OnnxRunner(path, onnx_options, threads=threads, spin=spin)
    if fmt == "torchscript":
        _require_trusted_torchscript(path, trust_code)
        module = torch.jit.load(str(path), map_location="cpu")

        def run_torchscript(lq: Tensor) -> tuple[Tensor, Tensor]:
            # the JIT's profiling passes re-optimise the whole graph over its first calls (tens of
            # seconds for this model) and gain nothing for a frozen graph of convolutions
            with torch.jit.optimized_execution(False):  # type: ignore[attr-defined]
                return cast(tuple[Tensor, Tensor], module(lq))

        return run_torchscript
    if fmt == "exported-program":
        from daefr.interop.pt2_guard import check_pt2_archive

        check_pt2_archive(path)  # torch.export.load unpickles what the archive marks as pickled
        return torch.export.load(str(path)).module()
    raise ConfigError(f"unknown export format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")


@dataclass(frozen=True)
class ExportCheck:
    """Exported vs eager on the same input: ``max_abs`` |restored difference|, ``code_agreement`` in [0, 1]."""

    fmt: str
    batch: int
    max_abs: float
    code_agreement: float
    eager_seconds: float
    exported_seconds: float
    tolerance: dict[str, float]

    @property
    def passed(self) -> bool:
        """Within :attr:`tolerance` on both figures."""
        return self.max_abs <= self.tolerance["max_abs"] and self.code_agreement >= self.tolerance["code_agreement"]

    def summary(self) -> str:
        """One line for the CLI."""
        verdict = "PASS" if self.passed else "FAIL"
        return (f"{verdict}: {self.fmt} vs eager on {self.batch} input(s): max |diff| {self.max_abs:.2e} "
                f"(tolerance {self.tolerance['max_abs']:.0e}), identical codes {100 * self.code_agreement:.2f}% "
                f"(needs {100 * self.tolerance['code_agreement']:.0f}%); eager {self.eager_seconds:.2f} s, "
                f"exported {self.exported_seconds:.2f} s")


def check_export(path: str | Path, restorer: nn.Module, *, fast: bool | None = None, batch: int = 2,
                 seed: int = 0, tolerance: dict[str, float] | None = None, fmt: str | None = None,
                 in_place: bool = False, trust_code: bool = False) -> ExportCheck:
    """Run the exported file and the eager graph it came from on ``batch`` seeded inputs and compare.

    ``fast`` defaults to the flag stored in the file. Inputs are uniform in [-1, 1]. ``in_place=True``
    converts ``restorer`` itself for the eager run instead of a deep copy (as in :func:`export_restorer`).
    ``trust_code``: run a TorchScript file that this process did not export (see :func:`load_exported`).
    """
    path = Path(path)
    meta = read_export_metadata(path)
    if fast is None:
        fast = meta.get("fast", "false") == "true"
    fixed = meta.get("batch", "dynamic")
    if fixed != "dynamic":
        batch = int(fixed)
    size = getattr(restorer, "input_size", None)
    if not isinstance(size, int):
        raise ConfigError("the restorer has no square input size (input_size)")
    g = torch.Generator().manual_seed(seed)
    lq = torch.rand(batch, 3, size, size, generator=g) * 2 - 1
    eager = _prepare(restorer, fast, in_place=in_place)
    with torch.inference_mode():
        start = time.perf_counter()
        ref_img, ref_idx = eager(lq)
        eager_s = time.perf_counter() - start
        run = load_exported(path, fmt, trust_code=trust_code)
        start = time.perf_counter()
        img, idx = run(lq)
        exported_s = time.perf_counter() - start
    max_abs = float((img.float() - ref_img.float()).abs().max())
    agreement = float((idx.long() == ref_idx.long()).float().mean())
    return ExportCheck(fmt or _format_of(path), batch, max_abs, agreement, eager_s, exported_s,
                       dict(tolerance or DEFAULT_TOLERANCE))
