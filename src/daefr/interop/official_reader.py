"""Safe reading of official (pytorch-lightning 1.0.8) DAEFR checkpoints, without pytorch_lightning.

How it works (and why it is safe): every load goes through ``torch.load(weights_only=True)``, i.e.
torch's own restricted unpickler (``torch._weights_only_unpickler``). That unpickler is a separate
implementation of the pickle machine: it resolves a ``GLOBAL`` only from an allow-list (tensor rebuild
functions, storages, ``collections.OrderedDict`` / ``Counter``, a few builtins), calls only allow-listed
callables, rejects ``STACK_GLOBAL`` / ``INST`` / ``OBJ`` and unknown opcodes, and never imports a module.
We do not replace it; we only add *stand-in classes* to its allow-list (``torch.serialization.safe_globals``)
for globals under the Lightning packages (``pytorch_lightning.*``, ``lightning.*``,
``lightning_fabric.*``). A Lightning 1.0.8 checkpoint pickles ``ModelCheckpoint`` *by reference* as the key
of its ``callbacks`` dict; the stand-in is a fresh, inert class created by daefr under that name, so
nothing from Lightning is imported or run. Any other global (``os.system``, ``builtins.eval``, a user class,
...) is refused with :class:`~daefr.errors.CheckpointError` naming it, before any of it runs.

Which Lightning names to stand in for is found in two ways: for torch's zip format, a static scan of
``data.pkl`` (``torch.serialization.get_unsafe_globals_in_checkpoint``), which also lets us list *all*
refused globals at once; for the legacy (pre-1.6, non-zip) format, which torch's weights-only loader also
reads, by retrying after each "unsupported global" refusal that names a Lightning class.

Files that are empty, truncated, corrupt or not checkpoints give one :class:`CheckpointError` naming the
file, never a traceback from inside zip/pickle code.
"""

from __future__ import annotations

import pickle
import threading
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from daefr.errors import CheckpointError
from daefr.utils.archive_limits import check_zip_expansion
from daefr.utils.reasons import one_line_reason, refused_pickle_global

__all__ = [
    "INTEGER_KEY_SUFFIXES",
    "LIGHTNING_PREFIXES",
    "LightningStandIn",
    "check_float_weights",
    "read_official_checkpoint",
    "read_official_file",
    "standin_for",
]

#: Module prefixes whose globals are replaced by inert stand-in classes instead of being refused.
LIGHTNING_PREFIXES: tuple[str, ...] = ("pytorch_lightning.", "lightning.", "lightning_fabric.")

_MAX_RETRIES = 64
_STANDINS: dict[str, type[LightningStandIn]] = {}
_STANDIN_LOCK = threading.Lock()
# torch's safe-globals list is process-global state, so concurrent loads must not interleave.
_LOAD_LOCK = threading.Lock()

class LightningStandIn:
    """Inert placeholder for a Lightning class (or an instance of one) found in a checkpoint.

    The class itself is what a Lightning checkpoint references (the ``callbacks`` dict key). If a file
    stores an *instance*, its constructor arguments and pickled state are kept as plain attributes.
    Instances of Lightning *dict subclasses* (e.g. a non-empty ``AttributeDict``) cannot be filled by
    torch's restricted unpickler and are refused with a clear error.
    """

    standin_name: str = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.standin_args = args
        self.__dict__.update(kwargs)

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self.__dict__["standin_state"] = state

    def __repr__(self) -> str:
        return f"<stand-in instance of {self.standin_name} {self.__dict__!r}>"


class _StandInMeta(type):
    def __repr__(cls) -> str:
        return f"<stand-in for {getattr(cls, 'standin_name', cls.__qualname__)}>"


def standin_for(qualified_name: str) -> type[LightningStandIn]:
    """The (cached) inert stand-in class daefr uses for the Lightning global ``qualified_name``."""
    if not qualified_name.startswith(LIGHTNING_PREFIXES):
        raise ValueError(f"{qualified_name!r} is not under a Lightning package {LIGHTNING_PREFIXES}")
    with _STANDIN_LOCK:
        cls = _STANDINS.get(qualified_name)
        if cls is None:
            short = qualified_name.rsplit(".", 1)[-1]
            made: Any = _StandInMeta(short, (LightningStandIn,), {"standin_name": qualified_name})
            cls = _STANDINS[qualified_name] = made
        return cls


def _check_file(path: Path) -> None:
    if not path.exists():
        raise CheckpointError(f"{path}: checkpoint file not found")
    if path.is_dir():
        raise CheckpointError(f"{path}: is a directory, not a checkpoint file")
    from daefr.utils.hub import require_regular_file

    require_regular_file(path, "checkpoint")  # a FIFO or device would block or never end
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None
    if size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes); it was probably cut off while writing")


def _refuse(path: Path, names: list[str]) -> CheckpointError:
    listed = ", ".join(sorted(set(names)))
    return CheckpointError(
        f"{path}: refused to load: the pickle references {listed}, which is not a tensor, storage or plain "
        "container; daefr does not run code from checkpoint files. Convert the file in a trusted environment "
        "or ask its author for a safetensors export"
    )


def _prescan(path: Path) -> list[str]:
    """Globals of a zip checkpoint outside torch's allow-list (static scan, nothing executed)."""
    if not zipfile.is_zipfile(path):
        return []
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except Exception:  # a scan failure is reported by the real (safe) load below
        return []


def _is_safetensors(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 0 < header_len <= path.stat().st_size - 8


def read_official_file(path: str | Path) -> Any:
    """The whole object stored in a ``torch.save`` / Lightning checkpoint file, loaded safely.

    For a Lightning checkpoint this is a dict with ``epoch``, ``global_step``, ``state_dict``,
    ``optimizer_states``, ``lr_schedulers``, ``callbacks`` (keys are :func:`standin_for` classes), ...
    Tensors are mapped to the CPU. Raises :class:`CheckpointError` naming the file on any problem.
    """
    path = Path(path)
    _check_file(path)
    check_zip_expansion(path, "checkpoint")
    standins: set[str] = set()
    refused: list[str] = []
    for name in _prescan(path):
        if name.startswith(LIGHTNING_PREFIXES):
            standins.add(name)
        else:
            refused.append(name)
    if refused:
        raise _refuse(path, refused)
    for _ in range(_MAX_RETRIES):
        allowed: list[Any] = [(standin_for(name), name) for name in sorted(standins)]
        try:
            with _LOAD_LOCK, torch.serialization.safe_globals(allowed):
                return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            refused_name = refused_pickle_global(exc)
            if (
                refused_name is not None
                and refused_name.startswith(LIGHTNING_PREFIXES)
                and refused_name not in standins
            ):
                standins.add(refused_name)
                continue
            if refused_name is not None:
                raise _refuse(path, [refused_name]) from None
            raise CheckpointError(
                f"{path}: refused to load: the pickle does something the safe reader does not allow "
                f"({one_line_reason(exc)})"
            ) from None
        except Exception as exc:  # zip/pickle internals: report one line, never their traceback
            raise CheckpointError(
                f"{path}: not a readable PyTorch checkpoint (truncated or corrupt?): {one_line_reason(exc)}"
            ) from None
    raise CheckpointError(f"{path}: refused to load: too many distinct Lightning globals (> {_MAX_RETRIES})")


def _as_state_dict(path: Path, obj: Any, where: str) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: {where} entry {key!r} is a {type(value).__name__}, not a tensor; not a state dict"
            )
        out[key] = value
    return out


def read_official_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` (key -> CPU tensor, file order) of a Lightning checkpoint or plain state-dict file.

    Accepts a Lightning checkpoint (dict with ``state_dict``), a ``torch.save``'d state dict, or a
    ``.safetensors`` file. Loading is safe (see module docstring); errors are :class:`CheckpointError`.
    """
    path = Path(path)
    _check_file(path)
    if _is_safetensors(path):
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path), device="cpu"))
        except Exception as exc:
            raise CheckpointError(f"{path}: corrupt safetensors file: {one_line_reason(exc)}") from None
    obj = read_official_file(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict or state dict")
    if "state_dict" in obj:
        inner = obj["state_dict"]
        if not isinstance(inner, Mapping):
            raise CheckpointError(f"{path}: 'state_dict' is a {type(inner).__name__}, not a mapping")
        return _as_state_dict(path, inner, "'state_dict'")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _as_state_dict(path, obj, "top-level")
    keys = ", ".join(repr(k) for k in list(obj)[:8])
    raise CheckpointError(
        f"{path}: no 'state_dict' in this checkpoint and it is not a plain state dict (top-level keys: {keys})"
    )


#: Keys of official checkpoints that legitimately hold integers (BatchNorm step counters of the PatchGAN
#: discriminator, ``official_keys.json``); every other official weight is floating point.
INTEGER_KEY_SUFFIXES: tuple[str, ...] = (".num_batches_tracked",)


def check_float_weights(state_dict: Mapping[str, torch.Tensor], where: str | Path) -> None:
    """Refuse a state dict with a non-floating-point tensor (other than the integer counters).

    Raise :class:`CheckpointError` naming the first key (file order) whose tensor is not floating point,
    except the integer counters of :data:`INTEGER_KEY_SUFFIXES` (loading would cast it silently).
    """
    for key, value in state_dict.items():
        if value.is_floating_point() or key.endswith(INTEGER_KEY_SUFFIXES):
            continue
        raise CheckpointError(
            f"{where}: weight {key!r} is stored as {value.dtype}, not floating point (first of its kind); an "
            "official checkpoint holds float weights, so the file is damaged or not a DAEFR checkpoint"
        )
