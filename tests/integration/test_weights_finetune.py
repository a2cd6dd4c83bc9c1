"""configs/finetune: overlays on the official stage configs that initialise from released weights by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from daefr.cli import main
from daefr.testing.hub_cache import (
    DAEFR_REPO,
    checkpoint_bytes,
    isolated_hub_env,
    tiny_vqgan_state,
    write_hub_snapshot,
)
from daefr.utils import hub

REPO = Path(__file__).resolve().parents[2]
# overlay -> (official stage config, init fields it sets)
OVERLAYS = {
    "hq_codebook": ("hq_codebook", {"init_from": "daefr-hq-codebook"}),
    "lq_codebook": ("lq_codebook", {"init_from": "daefr-lq-codebook"}),
    "association": ("association", {"init_from": "daefr-association", "init_hq_from": None, "init_lq_from": None}),
    "restoration": ("restoration", {"init_hq_codebook_from": "daefr-hq-codebook",
                                    "init_association_from": "runs/finetune/association/checkpoints/last.ckpt"}),
    "restoration_from_daefr": ("restoration", {"init_from": "daefr", "init_hq_codebook_from": None,
                                               "init_association_from": None}),
}


CHAINS = {  # chain -> stage -> init fields as the stage runs
    "domain_chain": {
        "hq_codebook": {"init_from": "daefr-hq-codebook"},
        "lq_codebook": {"init_from": "daefr-lq-codebook"},
        "association": {"init_hq_from": "runs/finetune/domain/hq_codebook/checkpoints/final.ckpt",
                        "init_lq_from": "runs/finetune/domain/lq_codebook/checkpoints/final.ckpt"},
        "restoration": {"init_hq_codebook_from": "runs/finetune/domain/hq_codebook/checkpoints/final.ckpt",
                        "init_association_from": "runs/finetune/domain/association/checkpoints/final.ckpt"},
    },
    "degradation_chain": {
        "association": {"init_from": "daefr-association", "init_hq_from": None, "init_lq_from": None},
        "restoration": {"init_hq_codebook_from": "daefr-hq-codebook",
                        "init_association_from": "runs/finetune/degradation/association/checkpoints/final.ckpt"},
    },
}


def test_every_overlay_and_chain_is_listed_here() -> None:
    found = sorted(p.stem for p in (REPO / "configs" / "finetune").glob("*.yaml"))
    assert found == sorted([*OVERLAYS, *CHAINS])


@pytest.mark.slow
@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_chain_stages_start_from_released_weights(chain: str, capsys) -> None:
    assert main(["train", str(REPO / "configs/finetune" / f"{chain}.yaml"), "data.init_args.train=my/train",
                 "data.init_args.val=my/val", "--dry-run"]) == 0
    text = capsys.readouterr().out
    docs = {}
    for part in text.split("# ---- ")[1:]:
        header, _, body = part.partition("\n")
        docs[header.split()[0]] = yaml.safe_load(body)
    assert list(docs) == list(CHAINS[chain])
    for stage, init in CHAINS[chain].items():
        args = docs[stage]["model"]["init_args"]
        for key, value in init.items():
            assert args[key] == value, (stage, key)
        assert args["learning_rate"] == pytest.approx(9.0e-7)
        assert docs[stage]["data"]["init_args"]["train"] == "my/train"


@pytest.mark.slow
@pytest.mark.parametrize("overlay", sorted(OVERLAYS))
def test_overlay_composes_with_the_official_config(overlay: str, capsys) -> None:
    base, init = OVERLAYS[overlay]
    code = main(["fit", "--config", str(REPO / "configs/daefr" / f"{base}.yaml"),
                 "--config", str(REPO / "configs/finetune" / f"{overlay}.yaml"), "--print_config"])
    assert code == 0
    config = yaml.safe_load(capsys.readouterr().out)
    args = config["model"]["init_args"]
    for key, value in init.items():
        assert args[key] == value, key
    names = [v for v in init.values() if isinstance(v, str) and not v.startswith("runs/")]
    assert names and all(n in hub.KNOWN_WEIGHTS for n in names)
    # the official architecture and data settings are kept; the run goes to its own folder
    official = yaml.safe_load((REPO / "configs/daefr" / f"{base}.yaml").read_text())["model"]["init_args"]
    for key in ("encoder", "codebook", "arch"):
        if key in official:
            assert args[key] == official[key], key
    assert args["learning_rate"] < official["learning_rate"]
    dirs = {cb["init_args"]["dirpath"] for cb in config["trainer"]["callbacks"] if "dirpath" in cb.get("init_args", {})}
    assert dirs == {f"runs/finetune/{overlay}/checkpoints"}


@pytest.mark.slow
def test_a_finetune_run_starts_from_the_released_codebook_by_name(tmp_path, monkeypatch) -> None:
    """The tiny stage config + the hq_codebook overlay, the released file served from a temporary Hub cache."""
    env = isolated_hub_env(monkeypatch, tmp_path / "home")
    monkeypatch.chdir(tmp_path)
    torch.set_num_threads(1)
    # the released file's layout (vqvae.*) at the tiny config's sizes
    released = tiny_vqgan_state(11, ch=32, z=32, embed_dim=32, n_embed=64)
    write_hub_snapshot(env["hub"], DAEFR_REPO,
                       {"HQ_codebook.ckpt": checkpoint_bytes({f"vqvae.{k}": v for k, v in released.items()})})
    faces = REPO / "src" / "daefr" / "assets" / "demo_faces"
    rc = main(["fit", "--config", str(REPO / "configs/tiny/hq_codebook.yaml"),
               "--config", str(REPO / "configs/finetune/hq_codebook.yaml"),
               "--trainer.max_steps", "2", "--trainer.limit_val_batches", "0", "--trainer.logger",
               '{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "logs"}}',
               "--trainer.accelerator", "cpu", "--trainer.devices", "1",
               "--data.init_args.train", str(faces / "train"), "--data.init_args.val", str(faces / "val")])
    assert rc == 0
    ckpt = torch.load(tmp_path / "runs/finetune/hq_codebook/checkpoints/last.ckpt", map_location="cpu",
                      weights_only=False)
    weights = ckpt["state_dict"]["vqgan.quantize.embedding.weight"]
    start = released["quantize.embedding.weight"]
    # two small steps from the released codebook: close to it, far from any fresh initialisation
    assert (weights - start).abs().max() < 1e-3 < (torch.rand_like(start) - start).abs().max()
