"""Every `daefr ...` command in the README's and docs' code blocks parses with today's options and spellings.

tests/integration/test_docs_examples.py runs them; this quick check catches what a rename breaks (an
option that no longer exists, a missing required one, a config file that moved) and refuses the hidden
old spellings kept for one release (``convert SOURCE OUTPUT``, ``--checkpoint``, ...): the docs show the
current ones. The commands come from :mod:`docs_examples` (placeholders such as ``...`` or ``<NAME>``
are left out; optional ``[--opt X]`` parts are dropped).
"""

from __future__ import annotations

import argparse

import pytest

from daefr.cli import LIGHTNING_SUBCOMMANDS, _command_modules
from daefr.commands._options import _POSITIONAL, _Alias, finish
from daefr.config_files import resolve_config_path
from docs_examples import REPO, DocCommand, collect_commands

COMMANDS = collect_commands()


def test_the_docs_hold_commands_to_check() -> None:
    assert len(COMMANDS) >= 40
    assert {c.subcommand for c in COMMANDS} >= {"restore", "fit", "train", "evaluate", "convert", "shard", "export",
                                                  "make-testset", "degrade-preview", "weights", "list", "info"}
    assert any(c.page == "README.md" and c.line.startswith("daefr export") for c in COMMANDS)  # README's table


def test_the_collector_drops_optional_parts_and_skips_placeholders(tmp_path) -> None:
    page = tmp_path / "page.md"
    page.write_text("```bash\ndaefr make-testset --hq hq/ -o t [--size 512] [--limit N]   # note\n"
                    "daefr restore --weights runs/x.safetensors ...\ndaefr info GROUP/NAME\n```\n"
                    "```console\n$ daefr list encoders\nencoders:\n```\n"
                    "| a | `daefr list [GROUP]`, `daefr shard DIR -o out/` |\n", encoding="utf-8")
    import docs_examples

    found = docs_examples._block_commands("p", page.read_text()) + docs_examples._table_commands("p", page.read_text())
    assert [c.line for c in found] == ["daefr make-testset --hq hq/ -o t", "daefr list encoders", "daefr list"]


def _parser(command: str) -> argparse.ArgumentParser:
    modules = _command_modules()
    parser = argparse.ArgumentParser(prog=f"daefr {command}", exit_on_error=False)
    modules[command].add_arguments(parser)
    return parser


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_docs_command_parses(command: DocCommand) -> None:
    name, rest = command.subcommand, command.words[2:]
    if name in LIGHTNING_SUBCOMMANDS:
        configs = [rest[i + 1] for i, w in enumerate(rest[:-1]) if w in ("--config", "-c")]
        for config in configs:
            assert (REPO / resolve_config_path(config)).is_file() or resolve_config_path(config).is_file(), \
                (command.id, config)
        return
    modules = _command_modules()
    assert name in modules, (command.id, command.line)
    parser = _parser(name)
    try:
        ns = parser.parse_intermixed_args(rest)
        old = [key[len(_POSITIONAL):] for key, value in vars(ns).items()
               if key.startswith(_POSITIONAL) and value is not None]
        finish(parser, ns, tuple(getattr(modules[name], "REQUIRED", ())))
    except (SystemExit, argparse.ArgumentError) as exc:
        pytest.fail(f"{command.id}: `{command.line}` does not parse: {exc}")
    assert not old, f"{command.id}: `{command.line}` gives {old} positionally (old spelling); use the option"
    hidden = {flag: action.new for action in parser._actions if isinstance(action, _Alias)
              for flag in action.option_strings}
    used = {w.split("=", 1)[0] for w in rest if w.startswith("-")} & set(hidden)
    assert not used, f"{command.id}: `{command.line}` uses old spellings {sorted(used)}; use {[hidden[u] for u in used]}"
