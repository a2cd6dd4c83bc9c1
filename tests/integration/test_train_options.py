"""Stage options: official-format initialisation, plugin components, W&B offline logging, paper configs."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
import yaml
from lightning.pytorch import Trainer, seed_everything

from daefr.cli import main
from daefr.models.vqgan import VQGAN
from daefr.nn.patchgan import PatchGANDiscriminator
from daefr.stages import AssociationStage, CodebookStage, RestorationStage
from daefr.testing.stages import FixedBatchDataModule

REPO = Path(__file__).resolve().parents[2]
LAYOUT = {"ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "resolution": 16, "attn_resolutions": [],
          "z_channels": 16, "dropout": 0.0, "enable_mid": True, "head_size": 1}
ENC = {"name": "vqgan", **{k: v for k, v in LAYOUT.items() if k != "dropout"}}
ARCH = {**LAYOUT, "embed_dim": 32, "n_embed": 32, "fusion_heads": 2, "n_layers": 1, "n_head": 2, "dim_mlp": 32,
        "transformer_dim": 16}
LOSS = {"name": "vqgan", "disc_start": 0, "perceptual_weight": 0, "discriminator": {"name": "patchgan", "ndf": 8, "n_layers": 2}}
PLUGIN_ENC = {"name": "plain_conv", "ch": 32, "ch_mult": [1, 2], "z_channels": 16}


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _fit(stage: object, steps: int = 2) -> Trainer:
    trainer = Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
                      enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(stage, datamodule=FixedBatchDataModule(image_size=16, batch_size=2, steps=steps))  # type: ignore[arg-type]
    return trainer


def _vqgan(seed: int) -> VQGAN:
    torch.manual_seed(seed)
    return VQGAN(ENC, ENC, {"name": "vq", "n_embed": 32, "embed_dim": 32})


def _official_ckpt(path: Path, branches: dict[str, VQGAN]) -> Path:
    """Write a checkpoint in the official key layout (vqvae.* / vqvae_LQ.*, loss*.discriminator.*)."""
    sd: dict[str, torch.Tensor] = {}
    for prefix, model in branches.items():
        sd.update({f"{prefix}.{k}": v for k, v in model.state_dict().items()})
        loss = "loss_LQ" if prefix == "vqvae_LQ" else "loss"
        disc = PatchGANDiscriminator(ndf=8, n_layers=2)
        sd.update({f"{loss}.discriminator.{k}": v for k, v in disc.state_dict().items()})
    if "vqvae_LQ" in branches:
        sd["logit_scale"] = torch.tensor(2.6592600345611572)
    torch.save({"epoch": 1, "global_step": 1, "state_dict": sd}, path)
    return path


def test_restoration_initialises_from_official_format_checkpoints(tmp_path) -> None:
    hq, a_hq, a_lq = _vqgan(1), _vqgan(2), _vqgan(3)
    hq_path = _official_ckpt(tmp_path / "HQ_codebook.ckpt", {"vqvae": hq})
    as_path = _official_ckpt(tmp_path / "Association_stage.ckpt", {"vqvae": a_hq, "vqvae_LQ": a_lq})
    stage = RestorationStage(arch=ARCH, init_hq_codebook_from=str(hq_path), init_association_from=str(as_path),
                             learning_rate=1e-3, scale_lr=False)
    net = stage.net
    pairs = [(net.restorer.decoder, hq.decoder), (net.restorer.codebook, hq.quantize),
             (net.restorer.post_quant_conv, hq.post_quant_conv), (net.target_encoder, hq.encoder),
             (net.target_quant_conv, hq.quant_conv), (net.restorer.hq_encoder, a_hq.encoder),
             (net.restorer.hq_quant_conv, a_hq.quant_conv), (net.restorer.lq_encoder, a_lq.encoder),
             (net.restorer.lq_quant_conv, a_lq.quant_conv), (net.assoc_lq_codebook, a_lq.quantize)]
    for ours, theirs in pairs:
        for (k, v), w in zip(ours.state_dict().items(), theirs.state_dict().values()):
            assert torch.equal(v, w), k
    decoder_before = net.restorer.decoder.conv_out.weight.detach().clone()
    _fit(stage)
    assert torch.equal(decoder_before, net.restorer.decoder.conv_out.weight), "the HQ decoder must stay frozen"

    # an official final-stage checkpoint initialises the whole network
    from daefr.testing.daefr_tiny import random_official_state_dict

    final = tmp_path / "DAEFR_model.ckpt"
    official = random_official_state_dict(ARCH, seed=5)
    torch.save({"state_dict": official}, final)
    again = RestorationStage(arch=ARCH, init_from=str(final), scale_lr=False)
    assert torch.equal(again.net.restorer.predictor.position_emb, official["position_emb"])


def test_codebook_stage_reads_the_official_lightning_checkpoint_mimic(parity_dir) -> None:
    ckpt = parity_dir / "vqgan_tiny_pl108.ckpt"
    if not ckpt.is_file():
        pytest.skip("parity checkpoint mimic not available")
    enc = {"name": "vqgan", "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "resolution": 64,
           "attn_resolutions": [16], "z_channels": 64}
    stage = CodebookStage(encoder=enc, decoder=enc, codebook={"name": "vq", "n_embed": 128, "embed_dim": 64},
                          loss={**LOSS, "discriminator": {"name": "patchgan", "ndf": 8, "n_layers": 3}},
                          init_from=str(ckpt), scale_lr=False)
    from daefr.interop.official_reader import read_official_checkpoint

    sd = read_official_checkpoint(ckpt)
    assert torch.equal(stage.vqgan.quantize.embedding.weight, sd["vqvae.quantize.embedding.weight"])
    assert torch.equal(stage.loss.discriminator.main[0].weight, sd["loss.discriminator.main.0.weight"])


def test_each_stage_trains_with_plugin_components() -> None:
    seed_everything(0)
    codebook = CodebookStage(encoder=PLUGIN_ENC, decoder=ENC, codebook={"name": "ema", "n_embed": 32, "embed_dim": 16},
                             loss={**LOSS, "pixel_loss": {"name": "charbonnier"}}, learning_rate=1e-3, scale_lr=False)
    assert type(codebook.vqgan.encoder).__module__.startswith("daefr_example_domain")
    assoc = AssociationStage(encoder=ENC, decoder=ENC, codebook={"name": "cosine", "n_embed": 32, "embed_dim": 16},
                             lq_encoder=PLUGIN_ENC, loss=LOSS, learning_rate=1e-3, scale_lr=False)
    restoration = RestorationStage(arch=ARCH, lq_encoder=PLUGIN_ENC, learning_rate=1e-3, scale_lr=False)
    assert type(restoration.net.restorer.lq_encoder).__name__ == "PlainConvEncoder"
    for stage, module in ((codebook, codebook.vqgan.encoder), (assoc, assoc.lq.encoder),
                          (restoration, restoration.net.restorer.lq_encoder)):
        before = [p.detach().clone() for p in module.parameters()]
        trainer = _fit(stage)
        assert trainer.global_step == 2
        assert any(not torch.equal(b, p) for b, p in zip(before, module.parameters())), type(stage).__name__


@pytest.mark.slow
def test_wandb_offline_run_holds_metrics_images_and_config(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = {"class_path": "lightning.pytorch.loggers.WandbLogger",
              "init_args": {"project": "daefr-test", "name": "tiny-hq", "save_dir": str(tmp_path / "wb"), "offline": True}}
    faces = REPO / "src" / "daefr" / "assets" / "demo_faces"
    rc = main(["fit", "--config", str(REPO / "configs/tiny/hq_codebook.yaml"), "--trainer.max_steps", "2",
               "--trainer.val_check_interval", "2", "--trainer.log_every_n_steps", "1",
               "--trainer.logger", json.dumps(logger), "--data.init_args.train", str(faces / "train"),
               "--data.init_args.val", str(faces / "val"), "--data.init_args.image_size", "16"])
    assert rc == 0
    import wandb

    wandb.finish()  # Lightning leaves the run open; finishing flushes the summary like a process exit would
    runs = list((tmp_path / "wb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, runs
    files = runs[0] / "files"
    assert list(files.glob("media/images/val/panel_*.png")), "validation panel not logged to W&B"
    # the offline run log (protobuf records) holds the logged metrics and the run config
    # (W&B's service process writes that log on its own; under load it can lag behind finish())
    needles = (b"val/psnr", b"train/rec_loss", b"val/codes_in_use", b"learning_rate", b"encoder")
    log_file = next(runs[0].glob("run-*.wandb"))
    deadline = time.monotonic() + 60.0
    record = log_file.read_bytes()
    while not all(n in record for n in needles) and time.monotonic() < deadline:
        time.sleep(0.5)
        record = log_file.read_bytes()
    for needle in needles:
        assert needle in record, needle


OFFICIAL = {
    "hq_codebook": {"model.init_args.loss.disc_start": 30001, "data.init_args.batch_size": 3, "trainer.max_epochs": 330,
                    "model.init_args.lr_scheduler.milestones": [400000, 800000], "model.init_args.target": "hq"},
    "lq_codebook": {"model.init_args.loss.disc_start": 30001, "data.init_args.batch_size": 3, "trainer.max_epochs": 250,
                    "model.init_args.target": "lq", "data.init_args.degradation.name": "daefr_small"},
    "association": {"model.init_args.loss.disc_start": 11, "data.init_args.batch_size": 2, "trainer.max_epochs": 50,
                    "model.init_args.association.temperature": 0.07,
                    "model.init_args.lr_scheduler.milestones": [4000000, 8000000]},
    "restoration": {"model.init_args.l2_weight": 10.0, "data.init_args.batch_size": 2, "model.init_args.arch": "full",
                    "data.init_args.degradation.name": "daefr_large",
                    "model.init_args.lr_scheduler.milestones": [4000000, 8000000]},
}
COMMON = {"model.init_args.learning_rate": 4.5e-6, "model.init_args.scale_lr": True, "model.init_args.betas": [0.5, 0.9],
          "trainer.devices": 4, "data.init_args.image_size": 512}
GAN = {"model.init_args.loss.disc_weight": 0.8, "model.init_args.loss.codebook_weight": 1.0,
       "model.init_args.codebook.n_embed": 1024, "model.init_args.codebook.embed_dim": 256,
       "model.init_args.codebook.beta": 0.25, "model.init_args.encoder.ch": 64,
       "model.init_args.encoder.ch_mult": [1, 2, 2, 4, 4, 8], "model.init_args.encoder.num_res_blocks": 2,
       "model.init_args.encoder.attn_resolutions": [16], "model.init_args.decoder.z_channels": 256,
       "model.init_args.loss.discriminator.ndf": 64, "model.init_args.loss.discriminator.n_layers": 3}


@pytest.mark.slow
@pytest.mark.parametrize("stage", sorted(OFFICIAL))
def test_paper_config_print_shows_official_values(stage: str, capsys) -> None:
    assert main(["fit", "--config", str(REPO / "configs/daefr" / f"{stage}.yaml"), "--print_config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    expected = {**COMMON, **OFFICIAL[stage], **({} if stage == "restoration" else GAN)}
    for dotted, value in expected.items():
        node = printed
        for part in dotted.split("."):
            node = node[part]
        assert node == (pytest.approx(value) if isinstance(value, float) else value), dotted


@pytest.mark.slow
def test_restoration_exports_ema_weights_and_trains_in_bf16(tmp_path) -> None:
    import daefr
    from daefr.stages import EMAWeights

    seed_everything(0)
    stage = RestorationStage(arch=ARCH, learning_rate=1e-3, scale_lr=False)
    ema = EMAWeights(decay=0.5)
    trainer = Trainer(accelerator="cpu", max_steps=3, logger=False, enable_progress_bar=False, precision="bf16-mixed",
                      enable_checkpointing=False, enable_model_summary=False, limit_val_batches=0, callbacks=[ema])
    trainer.fit(stage, datamodule=FixedBatchDataModule(image_size=16, batch_size=2, steps=3))
    assert trainer.global_step == 3 and ema.num_updates == 3
    live = stage.net.restorer.lq_encoder.conv_in.weight.detach().clone()
    path = stage.export_restorer(tmp_path / "restorer.safetensors")
    assert torch.equal(stage.net.restorer.lq_encoder.conv_in.weight, live), "export must put the live weights back"
    loaded = daefr.load_restorer(path)
    exported = loaded.lq_encoder.conv_in.weight
    assert torch.equal(exported, ema.shadow["lq_encoder.conv_in.weight"])
    assert not torch.equal(exported, live)
    assert torch.isfinite(live).all()
