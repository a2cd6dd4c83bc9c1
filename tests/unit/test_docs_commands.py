"""Every `daefr ...` command in the README's and docs' code blocks parses with today's options.

Running each example needs weights and data that tests do not have; parsing catches what a rename breaks
(an option that no longer exists, a missing required one, a config file that moved). Lines with
placeholders (``...``, ``[OPTIONAL]``, ``<NAME>``) are skipped.
"""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from daefr.cli import LIGHTNING_SUBCOMMANDS, _command_modules
from daefr.commands._options import finish
from daefr.config_files import resolve_config_path

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _commands() -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for page in PAGES:
        for block in re.findall(r"```[a-z]*\n(.*?)```", page.read_text(encoding="utf-8"), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                line = line.split(" #", 1)[0].strip()
                if not re.match(r"daefr [a-z-]+(\s|$)", line) or re.search(r"\.\.\.|\s\[|<\w+>", line):
                    continue
                found.append((page.relative_to(REPO).as_posix(), line))
    return found


COMMANDS = _commands()


def test_the_docs_hold_commands_to_check() -> None:
    assert len(COMMANDS) >= 20
    assert {line.split()[1] for _, line in COMMANDS} >= {"restore", "fit", "train", "evaluate", "convert"}


@pytest.mark.parametrize(("page", "line"), COMMANDS, ids=[f"{p}:{i}" for i, (p, _) in enumerate(COMMANDS)])
def test_docs_command_parses(page: str, line: str) -> None:
    words = shlex.split(line)
    command, rest = words[1], words[2:]
    if command in LIGHTNING_SUBCOMMANDS:
        configs = [rest[i + 1] for i, w in enumerate(rest[:-1]) if w in ("--config", "-c")]
        for config in configs:
            assert (REPO / resolve_config_path(config)).is_file() or resolve_config_path(config).is_file(), \
                (page, config)
        return
    modules = _command_modules()
    assert command in modules, (page, line)
    parser = argparse.ArgumentParser(prog=f"daefr {command}", exit_on_error=False)
    modules[command].add_arguments(parser)
    try:
        ns = parser.parse_intermixed_args(rest)
        finish(parser, ns, tuple(getattr(modules[command], "REQUIRED", ())))
    except (SystemExit, argparse.ArgumentError) as exc:
        pytest.fail(f"{page}: `{line}` does not parse: {exc}")
