"""One vocabulary for the options that several ``daefr`` subcommands share.

:data:`SHARED_OPTIONS` is the table: one spelling and one meaning per concept, checked against every
subcommand by ``tests/unit/test_cli_vocabulary.py``. The ``add_*`` helpers add an option the table's
way; spellings used before 0.2 stay accepted, hidden from ``--help``, for one release (:func:`add_alias`,
:func:`add_positional_alias`; listed in docs/index.md, "One vocabulary").
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

__all__ = ["SHARED_OPTIONS", "SharedOption", "add_alias", "add_device", "add_force", "add_no_progress",
           "add_output", "add_positional_alias", "add_weights", "finish", "resolve_device"]


@dataclass(frozen=True)
class SharedOption:
    """A concept: its flags, the argparse ``dest``, its default (``...``: set per command) and meaning."""

    flags: tuple[str, ...]
    dest: str
    default: Any
    meaning: str


SHARED_OPTIONS: dict[str, SharedOption] = {
    "weights": SharedOption(("-w", "--weights"), "weights", ...,
                            "restorer weights: a file, a name from `daefr weights list` or an hf:// URI"),
    "output": SharedOption(("-o", "--output"), "output", ..., "where the command writes (a folder or a file)"),
    "force": SharedOption(("--force",), "force", False, "replace an existing output file / write into a "
                          "non-empty output folder"),
    "device": SharedOption(("--device",), "device", "auto", "torch device: auto (cuda, then mps, then cpu), "
                           "cpu, cuda, cuda:N, mps"),
    "no_progress": SharedOption(("--no-progress",), "no_progress", False, "no progress bar or per-image lines"),
    "aligned": SharedOption(("--aligned",), "aligned", ..., "inputs are aligned face crops (restore: default "
                            "off, photos; evaluate: default on, a test set of crops)"),
    "batch_size": SharedOption(("--batch-size",), "batch_size", ..., "images per network call"),
    "size": SharedOption(("--size",), "size", ..., "images are made SIZE x SIZE pixels first (shard and "
                         "make-testset: default keep; degrade-preview: the tile side)"),
}

_POSITIONAL = "_old_positional__"  # dest prefix of hidden positional aliases (moved by finish())
_NEW_SPELLING: dict[str, str] = {}  # dest -> its current flags, for messages


class _Alias(argparse.Action):
    """A hidden old spelling: stores into the new option's dest (``new`` names the current spelling)."""

    def __init__(self, *args: Any, new: str, value: Any = None, **kwargs: Any) -> None:
        self.new, self.value = new, value
        super().__init__(*args, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        # accepted silently (scripts that parse stderr keep working); docs/restore.md lists the old spellings
        setattr(namespace, self.dest, self.value if self.nargs == 0 else values)


def add_alias(parser: argparse.ArgumentParser | Any, old: str, dest: str, new: str, *,
              flag_value: Any = None) -> None:
    """Accept ``old`` (hidden from --help) for option ``new``; ``flag_value``: the old one was a flag."""
    if flag_value is not None:
        parser.add_argument(old, dest=dest, nargs=0, action=_Alias, new=new, value=flag_value,
                            default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    else:
        parser.add_argument(old, dest=dest, action=_Alias, new=new, default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS)


def add_positional_alias(parser: argparse.ArgumentParser | Any, dest: str, new: str) -> None:
    """Accept option ``new`` (dest ``dest``) positionally, as before 0.2 (hidden; :func:`finish` moves it)."""
    parser.add_argument(f"{_POSITIONAL}{dest}", nargs="?", default=None, metavar=dest.upper(), help=argparse.SUPPRESS)
    _NEW_SPELLING[dest] = new


def finish(parser: argparse.ArgumentParser, ns: argparse.Namespace, required: tuple[str, ...] = ()) -> None:
    """After parsing: move positional aliases into their options; refuse a missing required one (usage error)."""
    for key in [k for k in vars(ns) if k.startswith(_POSITIONAL)]:
        value = getattr(ns, key)
        delattr(ns, key)
        if value is None:
            continue
        dest = key[len(_POSITIONAL):]
        given = getattr(ns, dest, None)
        if given is not None and given != parser.get_default(dest) and given != value:
            new = _NEW_SPELLING.get(dest, dest)
            parser.error(f"{value} given positionally and {given} as {new}; give it once, as {new}")
        setattr(ns, dest, value)
    for dest in required:
        if getattr(ns, dest, None) is None:
            flags = "/".join(SHARED_OPTIONS[dest].flags) if dest in SHARED_OPTIONS else dest
            parser.error(f"the following arguments are required: {flags}")


def add_weights(parser: argparse.ArgumentParser | Any, default: str | None, help: str) -> None:
    """``-w/--weights`` (the table's spelling)."""
    parser.add_argument("-w", "--weights", default=default, help=help)


def add_output(parser: argparse.ArgumentParser | Any, help: str, *, default: str | None = None,
               old: tuple[str, ...] = (), required: bool = False) -> None:
    """``-o/--output``; ``old`` are hidden spellings used before (e.g. ``--out``); ``required`` without them."""
    parser.add_argument("-o", "--output", default=default, help=help, required=required and not old)
    for spelling in old:
        add_alias(parser, spelling, "output", "-o/--output")


def add_force(parser: argparse.ArgumentParser | Any, help: str) -> None:
    """``--force``."""
    parser.add_argument("--force", action="store_true", help=help)


def add_device(parser: argparse.ArgumentParser | Any, what: str = "the network") -> None:
    """``--device`` (default auto: cuda, then mps, then cpu)."""
    parser.add_argument("--device", default="auto",
                        help=f"torch device for {what}: auto (cuda, then mps, then cpu; default), cpu, cuda, cuda:N, mps")


def add_no_progress(parser: argparse.ArgumentParser | Any, old: tuple[str, ...] = ()) -> None:
    """``--no-progress``; ``old`` are hidden flag spellings used before (e.g. ``--quiet``)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bar or per-image lines")
    for spelling in old:
        add_alias(parser, spelling, "no_progress", "--no-progress", flag_value=True)


def resolve_device(name: str) -> str:
    """``auto`` -> ``cuda`` when available, then ``mps``, else ``cpu``; any other name unchanged."""
    if name != "auto":
        return name
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"
