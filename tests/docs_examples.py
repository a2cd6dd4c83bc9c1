"""The `daefr ...` command examples of README.md and docs/*.md, collected once for the docs tests.

Collected: lines of fenced code blocks that start with ``daefr `` (or ``$ daefr `` in ``console``
blocks; the lines after them are the shown output), with ``\\`` continuations joined and trailing
``# comments`` dropped, and the inline commands in the rows of the README's tables (its "what to run" table;
the docs' tables quote fragments such as ``daefr restore --aligned``). Optional parts written ``[--option VALUE]`` / ``[-w FILE]`` / ``[GROUP]`` are dropped (the
command runs without them). Lines that still hold a placeholder (``...``, ``<NAME>``, an upper-case
word such as ``DIR`` or ``GROUP/NAME``) are not commands one can run as written and are left out.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

_FENCE = re.compile(r"^```([a-z]*)\n(.*?)^```", re.S | re.M)
_OPTIONAL = re.compile(r"\s\[(?:-{1,2}[a-z][^\]]*|[A-Z_/]+)\]")  # `[--size 512]`, `[-w F]`, `[GROUP]`
_PLACEHOLDER_WORD = re.compile(r"^[A-Z][A-Z_]*(/[A-Z_]+)*$")  # DIR, N, GROUP/NAME (not DAEFR_model.ckpt)


@dataclass(frozen=True)
class DocCommand:
    """One runnable-as-written command: the page it is on, its line there and the command text."""

    page: str
    line_no: int
    line: str

    @property
    def words(self) -> list[str]:
        """The command split as a shell would (``words[0] == "daefr"``)."""
        return shlex.split(self.line)

    @property
    def subcommand(self) -> str:
        """``restore``, ``fit``, ``weights``, ..."""
        return self.words[1]

    @property
    def id(self) -> str:
        """A short test id: page and line number."""
        return f"{self.page}:{self.line_no}"


def _clean(text: str) -> str | None:
    """The command in ``text`` with optional parts dropped, or None when a placeholder remains."""
    text = _OPTIONAL.sub("", text).strip()
    if not re.match(r"daefr [a-z-]+(\s|$)", text) or "..." in text or re.search(r"<\w+>", text):
        return None
    try:
        words = shlex.split(text)
    except ValueError:
        return None
    if any(_PLACEHOLDER_WORD.match(w) for w in words[1:]):
        return None
    return text


def _block_commands(page: str, text: str) -> list[DocCommand]:
    found: list[DocCommand] = []
    for match in _FENCE.finditer(text):
        start = text.count("\n", 0, match.start(2)) + 1
        lines = match.group(2).split("\n")
        i = 0
        while i < len(lines):
            line_no, line = start + i, lines[i]
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1].rstrip() + " " + lines[i].strip()
            i += 1
            line = line.strip()
            if match.group(1) == "console":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            line = line.split(" #", 1)[0].strip()
            command = _clean(line)
            if command is not None:
                found.append(DocCommand(page, line_no, command))
    return found


def _table_commands(page: str, text: str) -> list[DocCommand]:
    found: list[DocCommand] = []
    for line_no, line in enumerate(text.split("\n"), 1):
        if not line.startswith("|"):
            continue
        for span in re.findall(r"`(daefr [a-z-]+ [^`]+)`", line):
            command = _clean(span)
            if command is not None:
                found.append(DocCommand(page, line_no, command))
    return found


def collect_commands(pages: list[Path] | None = None) -> list[DocCommand]:
    """Every runnable-as-written ``daefr`` command of ``pages`` (default README.md + docs/*.md), in page order."""
    found: list[DocCommand] = []
    for path in PAGES if pages is None else pages:
        text = path.read_text(encoding="utf-8")
        page = path.relative_to(REPO).as_posix()
        table = _table_commands(page, text) if page == "README.md" else []
        found += sorted(_block_commands(page, text) + table, key=lambda c: c.line_no)
    return found
