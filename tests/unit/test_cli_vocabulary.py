"""One vocabulary: every subcommand's shared options against the table in daefr.commands._options."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from daefr.cli import _command_modules, main
from daefr.commands._options import SHARED_OPTIONS, finish

#: Spellings used before 0.2 that must still parse (hidden) -> the dest they set.
OLD_SPELLINGS = {
    "evaluate": {"--checkpoint": "weights", "--not-aligned": "aligned", "--out": "output"},
    "make-testset": {"--out": "output"},
    "shard": {"--quiet": "no_progress"},
    "train": {"--out": "output"},
    "experiment": {"--out": "output"},
}
#: The flags of each concept that used to mean it in some command: none may remain visible under another name.
FORMER_NAMES = {"--checkpoint": "weights", "--not-aligned": "aligned", "--out": "output", "--quiet": "no_progress"}


def _parser(name: str, module: object) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"daefr {name}")
    module.add_arguments(parser)  # type: ignore[attr-defined]
    return parser


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.help != argparse.SUPPRESS]


#: Commands not yet on the table, with what they need (strict xfail: fixing one makes this list shrink).
NOT_YET: dict[str, str] = {}


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(reason=NOT_YET[n], strict=True)) if n in NOT_YET else n
    for n in sorted(_command_modules())])
def test_shared_options_follow_the_table(name: str) -> None:
    module = _command_modules()[name]
    parser = _parser(name, module)
    for action in _visible(parser):
        for concept, option in SHARED_OPTIONS.items():
            if action.dest != option.dest or not action.option_strings:
                continue
            flags = tuple(f for f in action.option_strings if not f.startswith("--no-") or concept == "no_progress")
            assert flags == option.flags, (name, concept, action.option_strings)
            if option.default is not ...:
                assert action.default == option.default, (name, concept, action.default)
        for old in FORMER_NAMES:
            assert old not in action.option_strings, (name, old)  # old spellings are hidden aliases only
    for spelling, dest in OLD_SPELLINGS.get(name, {}).items():
        hidden = [a for a in parser._actions if spelling in a.option_strings]
        assert hidden and hidden[0].help == argparse.SUPPRESS and hidden[0].dest == dest, (name, spelling)


def test_the_table_covers_the_concepts_the_commands_share() -> None:
    dests: dict[str, set[str]] = {}
    for name, module in _command_modules().items():
        for action in _visible(_parser(name, module)):
            if action.option_strings:
                dests.setdefault(action.dest, set()).add(name)
    for dest in ("weights", "output", "force", "device", "no_progress"):
        assert dest in SHARED_OPTIONS and len(dests.get(dest, ())) >= 3, (dest, dests.get(dest))
    users = {c: sorted(dests.get(o.dest, ())) for c, o in SHARED_OPTIONS.items()}
    assert set(users["weights"]) >= {"restore", "evaluate", "export", "convert"}
    assert set(users["output"]) >= {"restore", "evaluate", "export", "convert", "shard", "make-testset", "train"}
    assert set(users["no_progress"]) >= {"restore", "evaluate", "shard", "make-testset"}


@pytest.mark.parametrize(("name", "argv", "expected"), [
    ("evaluate", ["--checkpoint", "w.safetensors", "--not-aligned", "--out", "o"],
     {"weights": "w.safetensors", "aligned": False, "output": "o"}),
    ("evaluate", ["-w", "w", "--no-aligned", "-o", "o"], {"weights": "w", "aligned": False, "output": "o"}),
    ("evaluate", ["-w", "w", "-o", "o"], {"aligned": True, "device": "auto"}),
    ("export", ["model.safetensors", "-o", "m.onnx"], {"weights": "model.safetensors", "output": "m.onnx"}),
    ("export", ["-o", "m.onnx"], {"weights": "daefr"}),
    ("convert", ["a.ckpt", "b.safetensors"], {"weights": "a.ckpt", "output": "b.safetensors"}),
    ("convert", ["-w", "a.ckpt", "-o", "b.safetensors"], {"weights": "a.ckpt", "output": "b.safetensors"}),
    ("shard", ["src", "out", "--quiet"], {"output": "out", "no_progress": True}),
    ("shard", ["src", "-o", "out"], {"output": "out", "no_progress": False}),
    ("make-testset", ["--hq", "h", "--out", "o"], {"output": "o", "device": "auto"}),
    ("restore", ["x.png", "-o", "o"], {"backend": "auto", "weights": "daefr", "aligned": False, "ext": "png"}),
])
def test_old_and_new_spellings_parse_to_the_same_options(name: str, argv: list[str], expected: dict[str, object]) -> None:
    module = _command_modules()[name]
    parser = _parser(name, module)
    ns = parser.parse_intermixed_args(argv)
    finish(parser, ns, tuple(getattr(module, "REQUIRED", ())))
    assert {k: getattr(ns, k) for k in expected} == expected
    assert not [k for k in vars(ns) if k.startswith("_old")]


def test_missing_required_option_is_a_usage_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["convert", "-w", str(tmp_path / "a.ckpt")])
    assert exc.value.code == 2 and "required: -o/--output" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["convert", "a.ckpt", "b.safetensors", "-o", "c.safetensors"])
    assert "give it once" in capsys.readouterr().err
