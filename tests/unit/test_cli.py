"""The `daefr` command: help, list, info, unknown commands, `python -m daefr`."""

from __future__ import annotations

import subprocess
import sys

import pytest

from daefr.cli import main


def test_help_lists_lightning_and_tool_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("fit", "validate", "test", "predict", "list", "info"):
        assert f"  {name} " in out


def test_no_arguments_prints_usage_and_fails(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: daefr" in capsys.readouterr().out


def test_unknown_command_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lsit"]) == 2
    assert "Did you mean list" in capsys.readouterr().err


def test_list_all_and_one_group(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "encoders:" in out and "losses:" in out and "face_detectors:" in out
    assert main(["list", "losses"]) == 0
    out = capsys.readouterr().out
    assert "charbonnier" in out and "daefr-example-domain 0.1.0" in out and "encoders:" not in out


def test_list_unknown_group_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "encoder"]) == 1
    err = capsys.readouterr().err
    assert "Did you mean 'encoders'" in err and "Traceback" not in err


def test_info_shows_signature_defaults_and_docstring(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "losses/charbonnier"]) == 0
    out = capsys.readouterr().out
    assert "eps: float = 0.001" in out and "eps = 0.001" in out and "Charbonnier" in out


def test_info_needs_group_slash_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "charbonnier"]) == 1
    assert "GROUP/NAME" in capsys.readouterr().err


def test_python_dash_m_daefr() -> None:
    proc = subprocess.run([sys.executable, "-m", "daefr", "list", "losses"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "charbonnier" in proc.stdout


def test_lightning_fit_help_runs_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["fit", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--print_config" in out and "--trainer" in out
