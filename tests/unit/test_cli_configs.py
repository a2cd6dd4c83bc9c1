"""Stage configs: shared bases (``base:``), paths that follow trainer.default_root_dir, short class names."""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from daefr.cli import main
from daefr.config_files import base_files, expand_config_args, load_composed, resolve_config_path
from daefr.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
PAPER = ("hq_codebook", "lq_codebook", "association", "restoration")


def _printed(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["fit", *argv, "--print_config"]) == 0
    return dict(yaml.safe_load(capsys.readouterr().out))


def _checkpoint_dirs(config: dict[str, Any]) -> set[str]:
    return {c["init_args"]["dirpath"] for c in config["trainer"]["callbacks"]
            if c["class_path"].endswith("ModelCheckpoint")}


@pytest.mark.parametrize("stage", PAPER)
def test_paper_stage_configs_show_only_what_is_specific(stage: str, capsys: pytest.CaptureFixture[str]) -> None:
    raw = yaml.safe_load((REPO / "configs" / "daefr" / f"{stage}.yaml").read_text())
    assert raw["base"] == "base.yaml"
    assert set(raw["trainer"]) <= {"default_root_dir", "max_epochs", "strategy"}  # no logger/callbacks copies
    assert raw["model"]["class_path"] in ("CodebookStage", "AssociationStage", "RestorationStage")
    config = _printed(capsys, "--config", str(REPO / "configs" / "daefr" / f"{stage}.yaml"),
                      "--trainer.default_root_dir", "/elsewhere/run")
    assert config["trainer"]["accelerator"] == "gpu" and config["trainer"]["devices"] == 4  # from the base
    assert config["model"]["class_path"].startswith("daefr.stages.")  # the short name resolved
    assert _checkpoint_dirs(config) == {"/elsewhere/run/checkpoints"}  # paths follow the root dir
    assert config["trainer"]["logger"]["init_args"]["save_dir"] == "/elsewhere/run"
    assert config["base"] is None  # the printed (and saved) config is complete: it reloads from anywhere
    if stage == "restoration":
        assert config["model"]["init_args"]["export_path"] == "/elsewhere/run/daefr_restorer.safetensors"


def test_tiny_paths_follow_default_root_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    tiny = str(REPO / "configs" / "tiny" / "hq_codebook.yaml")
    assert _checkpoint_dirs(_printed(capsys, "--config", tiny)) == {"runs/tiny/hq_codebook/checkpoints"}
    config = _printed(capsys, "--config", tiny, "--trainer.default_root_dir", str(tmp_path))
    assert _checkpoint_dirs(config) == {f"{tmp_path}/checkpoints"}
    assert config["trainer"]["logger"]["init_args"]["save_dir"] == str(tmp_path)
    assert config["trainer"]["enable_progress_bar"] is True
    for path in (REPO / "configs" / "tiny").glob("*.yaml"):
        text = path.read_text()
        assert "runs/tiny/" + path.stem + "/" not in text.split("\n", 3)[-1].replace("# ", "#"), path


def test_short_class_names_and_fit_help_lists_the_stages(capsys: pytest.CaptureFixture[str]) -> None:
    config = _printed(capsys, "--config", str(REPO / "configs" / "tiny" / "hq_codebook.yaml"),
                      "--model", "AssociationStage")
    assert config["model"]["class_path"] == "daefr.stages.association.AssociationStage" or \
        config["model"]["class_path"] == "daefr.stages.AssociationStage"
    assert main(["fit", "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    for name in ("CodebookStage", "AssociationStage", "RestorationStage", "FaceDataModule"):
        assert name in help_text


def test_composition_matches_the_cli_and_chain_loader(tmp_path: Path) -> None:
    stage = REPO / "configs" / "daefr" / "hq_codebook.yaml"
    assert base_files(stage) == [stage.parent / "base.yaml"]
    assert expand_config_args(["fit", "-c", str(stage), "--x", "1"]) == [
        "fit", "--config", str(stage.parent / "base.yaml"), "--config", str(stage), "--base", "null", "--x", "1"]
    merged = load_composed(stage)
    assert "base" not in merged and merged.trainer.accelerator == "gpu"
    assert merged.trainer.default_root_dir == "runs/daefr/hq_codebook" and merged.trainer.max_epochs == 330
    # bases of bases, deepest first; a list of bases; the stage's own list replaces the base's
    (tmp_path / "a.yaml").write_text("trainer: {max_steps: 1, callbacks: [{class_path: A}]}\nseed_everything: 1\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\ntrainer: {max_steps: 2}\n")
    (tmp_path / "s.yaml").write_text("base: [b.yaml]\ntrainer: {callbacks: [{class_path: B}]}\n")
    assert base_files(tmp_path / "s.yaml") == [tmp_path / "a.yaml", tmp_path / "b.yaml"]
    merged = load_composed(tmp_path / "s.yaml")
    assert merged.trainer.max_steps == 2 and merged.seed_everything == 1
    assert [c.class_path for c in merged.trainer.callbacks] == ["B"]


def test_bad_bases_are_one_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "s.yaml").write_text("base: nothere.yaml\n")
    with pytest.raises(ConfigError, match="base config .*nothere.yaml does not exist"):
        base_files(tmp_path / "s.yaml")
    assert main(["fit", "--config", str(tmp_path / "s.yaml")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nothere.yaml does not exist" in err
    (tmp_path / "x.yaml").write_text("base: y.yaml\n")
    (tmp_path / "y.yaml").write_text("base: x.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        base_files(tmp_path / "x.yaml")
    (tmp_path / "bad.yaml").write_text("base: {a: 1}\n")
    with pytest.raises(ConfigError, match="file path or a list"):
        base_files(tmp_path / "bad.yaml")


def test_configs_paths_work_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    found = resolve_config_path("configs/tiny/chain.yaml")
    assert found.is_file() and found.read_bytes() == (REPO / "configs" / "tiny" / "chain.yaml").read_bytes()
    assert resolve_config_path("tiny/hq_codebook.yaml").is_file()
    assert resolve_config_path("configs/none.yaml") == Path("configs/none.yaml")  # not shipped: unchanged
    (tmp_path / "configs" / "tiny").mkdir(parents=True)
    (tmp_path / "configs" / "tiny" / "chain.yaml").write_text("mine")
    assert resolve_config_path("configs/tiny/chain.yaml") == Path("configs/tiny/chain.yaml")  # local wins


def test_remaining_private_lightningcli_overrides_are_pinned() -> None:
    """Each private LightningCLI method daefr overrides still exists with the signature and call site we rely on."""
    from lightning.pytorch.cli import LightningCLI

    from daefr.lightning_cli import DaefrCLI

    private = sorted(name for name, value in vars(DaefrCLI).items()
                     if name.startswith("_") and not name.startswith("__") and callable(value))
    assert private == ["_parse_ckpt_path", "_run_subcommand"]  # a new one needs a pin here
    assert list(inspect.signature(LightningCLI._parse_ckpt_path).parameters) == ["self"]
    assert list(inspect.signature(LightningCLI._run_subcommand).parameters) == ["self", "subcommand"]
    source = inspect.getsource(LightningCLI)
    assert "self._parse_ckpt_path()" in source and "self._run_subcommand(self.subcommand)" in source
    # before_/after_<subcommand> are LightningCLI's public hooks, looked up by name
    run_source = inspect.getsource(LightningCLI._run_subcommand)
    assert 'f"before_{subcommand}"' in run_source and 'f"after_{subcommand}"' in run_source
    for name in ("before_fit", "after_fit", "add_arguments_to_parser"):
        assert name in vars(DaefrCLI)


def test_quiet_lightning_drops_the_advert_and_keeps_other_lines(caplog: pytest.LogCaptureFixture) -> None:
    from daefr.lightning_cli import quiet_lightning

    quiet_lightning()
    log = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        log.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        log.info("GPU available: False, used: False")
    assert [r.getMessage() for r in caplog.records] == ["GPU available: False, used: False"]
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        quiet_lightning()  # filters go in front of the "default" one just added
        warnings.warn("Using ModelCheckpoint with manual optimization and every_n_train_steps, but no", stacklevel=1)
        warnings.warn("something else", stacklevel=1)
    assert [str(w.message) for w in caught] == ["something else"]


def test_final_line_names_the_checkpoints(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from daefr.lightning_cli import final_line

    callback = SimpleNamespace(dirpath=str(tmp_path / "ck"), last_model_path=str(tmp_path / "ck" / "last.ckpt"),
                               best_model_path="")
    export = tmp_path / "r.safetensors"
    export.write_bytes(b"x")
    line = final_line(SimpleNamespace(checkpoint_callbacks=[callback]), SimpleNamespace(export_path=str(export)))
    assert line == (f"daefr fit: done; checkpoints in {tmp_path}/ck (last: {tmp_path}/ck/last.ckpt); "
                    f"restorer exported to {export}")
    assert "nowhere" in final_line(SimpleNamespace(checkpoint_callbacks=[]))


def test_a_printed_config_reloads_from_another_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stage = str(REPO / "configs" / "daefr" / "association.yaml")
    assert main(["fit", "--config", stage, "--print_config"]) == 0
    saved = tmp_path / "elsewhere" / "config.yaml"
    saved.parent.mkdir()
    saved.write_text(capsys.readouterr().out)
    again = _printed(capsys, "--config", str(saved))
    assert again == yaml.safe_load(saved.read_text())


def test_chain_stages_compose_their_bases(tmp_path: Path) -> None:
    from daefr.chain import load_chain, stage_config

    chain = load_chain(REPO / "configs" / "finetune" / "domain_chain.yaml", out=tmp_path / "run")
    config = stage_config(chain, chain.stages[0])
    assert config.trainer.accelerator == "gpu" and "base" not in config  # from configs/daefr/base.yaml
    dirs = {c.init_args.dirpath for c in config.trainer.callbacks if c.class_path.endswith("ModelCheckpoint")}
    assert dirs == {str(tmp_path / "run" / "hq_codebook" / "checkpoints")}
    assert config.trainer.logger.init_args.save_dir == str(tmp_path / "run" / "hq_codebook")
