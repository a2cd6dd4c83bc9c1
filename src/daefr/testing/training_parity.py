"""Run our training stages on the official training-step fixtures (``../shared/parity/training``).

The fixtures (see their README) hold one or two official training iterations per stage: inputs, every
logged value, gradient checksums and named full gradients per optimizer call, parameters, BatchNorm
buffers and Adam state after each iteration. This module

* reads a fixture set (:func:`training_parity_dir`, :class:`TrainingFixture`),
* builds our stage with the fixture's tiny architecture and recipe weights, mapped to our keys through
  the checkpoint key maps (:func:`build_stage`),
* makes the LPIPS dropout draw the fixture's masks (:class:`FixtureDropout`, the same instrumented point
  as the official run),
* runs the stage through a real :class:`lightning.pytorch.Trainer` (the ``daefr fit`` code path: our
  ``training_step``, optimizers and manual-optimisation loop) while a callback records gradients at every
  optimizer step, the logged values and the state after every batch (:func:`run_stage`),
* and compares the record with the fixture within the README's tolerances (the ``check_*`` functions
  return lists of human-readable failures; empty means parity).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from daefr.testing.parity import fixture_meta, fixture_tensors, load_recipe

__all__ = [
    "ENV_VAR",
    "FIXTURES",
    "FixtureDropout",
    "Record",
    "StageUnderTest",
    "Tolerances",
    "TrainingFixture",
    "build_stage",
    "all_failures",
    "check_after",
    "check_initial_weights",
    "check_gradients",
    "check_logged",
    "check_optimizers",
    "check_order",
    "check_outputs",
    "run_fixture",
    "run_stage",
    "training_parity_dir",
]

ENV_VAR = "DAEFR_TRAINING_PARITY_DIR"
FIXTURES = ("codebook_step", "association_step", "restoration_step")


def training_parity_dir(repo_root: str | Path) -> Path:
    """``$DAEFR_TRAINING_PARITY_DIR``, else ``<repo_root>/../shared/parity/training``."""
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else Path(repo_root).resolve().parent / "shared" / "parity" / "training"


# ----- tolerances (the fixture README's recommendations) -------------------------------------------------
@dataclass(frozen=True)
class Tolerances:
    """README "Tolerances" recommendations (about 10x the deviations measured between thread counts/kernels)."""

    logged_rtol: float = 5e-4
    logged_atol: float = 1e-6
    d_weight_rtol: float = 3e-3
    grad_rel: float = 3e-3  # of fsum(|g_ref|) for checksums, of max|g_ref| for full tensors
    noise_grad_abs_sum: float = 1e-5
    delta_flips: float = 10.0  # in units of 2*lr, per key
    delta_flips_total: float = 100.0  # in units of 2*lr, summed over keys
    delta_abs_rel: float = 2e-3
    param_rel: float = 1e-6
    param_full_atol: float = 1e-5
    flip_elements: int = 5  # elements per named tensor allowed off by ~2*lr (first-step sign flips)
    buffer_rtol: float = 1e-5
    adam_rel: float = 3e-3


TOL = Tolerances()


# ----- fixture files ---------------------------------------------------------------------------------------
class TrainingFixture:
    """One fixture (``<name>.json`` + ``<name>_io.safetensors``) of a training-parity folder."""

    def __init__(self, directory: str | Path, name: str) -> None:
        self.dir = Path(directory)
        self.name = name
        self.meta: dict[str, Any] = fixture_meta(self.dir, name)
        self.tensors: dict[str, Tensor] = fixture_tensors(self.dir, name)

    @property
    def lr(self) -> float:
        """The official run's learning rate."""
        return float(self.meta["learning_rate"]["value"] if isinstance(self.meta["learning_rate"], dict)
                     else self.meta["learning_rate"])

    @property
    def params(self) -> dict[str, Any]:
        """The official model ``params`` (ddconfig, lossconfig, image_key, ...)."""
        return dict(self.meta["model"]["params"])

    @property
    def iterations(self) -> list[dict[str, Any]]:
        """The recorded iterations (losses and weights per step)."""
        return list(self.meta["iterations"])

    def batch(self, i: int) -> dict[str, Tensor]:
        """The official batch dict of iteration ``i`` (``gt`` / ``lq``)."""
        return {k[len(f"it{i}."):]: v for k, v in self.tensors.items() if re.fullmatch(rf"it{i}\.(gt|lq)", k)}

    def noise_keys(self) -> set[str]:
        """Trained keys whose gradient is rounding noise (compare by magnitude only)."""
        return set(self.meta["noise_gradient_parameters"]["keys_in_this_fixture (trained keys only)"])

    def salt_of(self) -> Callable[[str], str]:
        """Key -> recipe salt, parsed from ``weights.salts`` ("all keys", "keys starting A or B", "all other keys")."""
        rules: list[tuple[tuple[str, ...], str]] = []
        default: str | None = None
        for rule, salt in self.meta["weights"]["salts"].items():
            if rule in ("all keys", "all other keys"):
                default = salt
                continue
            match = re.fullmatch(r"keys starting (.+)", rule)
            if match is None:
                raise ValueError(f"{self.name}: cannot read the salt rule {rule!r}")
            rules.append((tuple(p.strip() for p in match.group(1).split(" or ")), salt))

        def salt_for(key: str) -> str:
            for prefixes, value in rules:
                if key.startswith(prefixes):
                    return value
            if default is None:
                raise ValueError(f"{self.name}: no salt rule covers {key!r}")
            return default

        return salt_for

    def recipe_state_dict(self) -> dict[str, Tensor]:
        """Recipe weights for every official key except the LPIPS scaling constants."""
        recipe_dir = self.dir if (self.dir / "recipe.py").is_file() else self.dir.parent
        recipe = load_recipe(recipe_dir)
        salt = self.salt_of()
        out: dict[str, Tensor] = {}
        for key, (shape, _dtype) in self.meta["state_dict"].items():
            if ".scaling_layer." in key:
                continue
            out.update(recipe.official_weights({key: tuple(shape)}, salt(key)))
        return out

    def lpips_masks(self, step: int, opt: int) -> list[Tensor]:
        """The five LPIPS dropout keep masks (bool) of ``training_step`` at global step ``step``, optimizer ``opt``."""
        masks = []
        for k in range(5):
            info = self.meta["lpips_dropout"]["masks"][f"step{step}/opt{opt}/lin{k}"]
            shape = tuple(info["shape"])
            bits = np.unpackbits(self.tensors[info["tensor"]].numpy())[: math.prod(shape)]
            masks.append(torch.from_numpy(bits.reshape(shape).astype(bool)))
        return masks


def checksum(t: Tensor) -> tuple[float, float]:
    """``(sum, sum |x|)`` in float64 (the fixtures use fsum; the difference is far below the tolerances)."""
    d = t.detach().double()
    return float(d.sum()), float(d.abs().sum())


# ----- LPIPS dropout with the fixture's masks ---------------------------------------------------------------
class FixtureDropout(nn.Module):
    """Drop-in for an LPIPS head's ``nn.Dropout(0.5)`` that applies queued fixture masks in train mode.

    Like ``nn.Dropout`` it is the identity in eval mode; in train mode it multiplies by ``keep * 2`` with
    the next queued mask and fails loudly when no mask is left or the shape differs.
    """

    def __init__(self, masks: list[Tensor]) -> None:
        super().__init__()
        self.masks = list(masks)
        self.used = 0

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) -> the same, times the next queued mask x 2 in train mode; unchanged in eval mode."""
        if not self.training:
            return x
        if not self.masks:
            raise AssertionError("LPIPS dropout called in train mode more often than the official training")
        keep = self.masks.pop(0)
        if tuple(keep.shape) != tuple(x.shape):
            raise AssertionError(f"LPIPS dropout mask {tuple(keep.shape)} does not fit the input {tuple(x.shape)}")
        self.used += 1
        return x * (keep.to(x.dtype) * 2.0)


def install_fixture_dropout(lpips: nn.Module, fixture: TrainingFixture, opt: int) -> list[FixtureDropout]:
    """Replace the five dropouts of ``lpips`` by :class:`FixtureDropout` fed with the masks of optimizer ``opt``."""
    per_step = [fixture.lpips_masks(int(it["global_step"]), opt) for it in fixture.iterations]
    drops = []
    for k in range(5):
        head = getattr(lpips, f"lin{k}").model
        if not isinstance(head[0], nn.Dropout):
            raise AssertionError(f"LPIPS lin{k} has no dropout in front of its 1x1 conv")
        drop = FixtureDropout([masks[k] for masks in per_step])
        drop.train(head[0].training)  # same mode as the dropout it replaces
        head[0] = drop
        drops.append(drop)
    return drops


# ----- building our stages from a fixture --------------------------------------------------------------------
@dataclass
class StageUnderTest:
    """Our stage plus what the comparison needs.

    ``names``: official key -> our state-dict key (parameters and buffers); ``opt_order``: our optimizer index
    for each official optimizer index; ``dropouts``: the installed fixture dropouts; ``watched``: official
    captured-output name (``xrec``, ``disc_out``, ``HQ_xrec``, ...) -> our module whose outputs are recorded.
    """

    stage: Any
    names: dict[str, str]
    opt_order: list[int]
    dropouts: list[FixtureDropout] = field(default_factory=list)
    watched: dict[str, nn.Module] = field(default_factory=dict)


_LAYOUT_KEYS = ("ch", "ch_mult", "num_res_blocks", "resolution", "attn_resolutions", "z_channels", "dropout",
                "enable_mid")


def _autoencoder_specs(dd: Mapping[str, Any]) -> dict[str, Any]:
    layout = {k: dd[k] for k in _LAYOUT_KEYS}
    return {
        "encoder": {"name": "vqgan", **layout, "in_channels": dd["in_channels"]},
        "decoder": {"name": "vqgan", **layout, "out_ch": dd["out_ch"]},
        "codebook": {"name": "vq", "n_embed": dd["n_embed"], "embed_dim": dd["embed_dim"]},
    }


def _loss_spec(lc: Mapping[str, Any]) -> dict[str, Any]:
    for flag in ("use_actnorm", "disc_conditional"):
        if lc.get(flag):
            raise ValueError(f"lossconfig {flag}=true is not supported by our PatchGAN")
    for name, off in (("perceptual_style_weight", 0.0), ("comp_weight", 0.0), ("identity_weight", 0.0)):
        if float(lc.get(name, off) or 0.0) != 0.0:
            raise ValueError(f"lossconfig {name}={lc[name]} is not part of this parity check")
    return {
        "name": "vqgan",
        "disc_start": int(lc["disc_start"]),
        "disc_weight": float(lc.get("disc_weight", 1.0)),
        "disc_factor": float(lc.get("disc_factor", 1.0)),
        "codebook_weight": float(lc.get("codebook_weight", 1.0)),
        "pixel_weight": float(lc.get("pixelloss_weight", 1.0)),
        "perceptual_weight": float(lc.get("perceptual_weight", 1.0)),
        "perceptual": {"name": "lpips", "pretrained": False},
        "discriminator": {"name": "patchgan", "in_channels": int(lc.get("disc_in_channels", 3)),
                          "ndf": int(lc.get("disc_ndf", 64)), "n_layers": int(lc.get("disc_num_layers", 3))},
        "disc_loss": str(lc.get("disc_loss", "hinge")),
    }


def _stage_options(fixture: TrainingFixture, batch_size: int, options: Mapping[str, Any]) -> dict[str, Any]:
    base = float(fixture.meta["model"]["base_learning_rate"])
    opts: dict[str, Any] = {"learning_rate": base, "scale_lr": True, "lr_batch_size": batch_size, "val_panels": 0}
    steps = fixture.params.get("schedule_step")
    if steps:  # official MultiStepLR (never reached within the fixture)
        opts["lr_scheduler"] = {"name": "multistep", "milestones": list(steps), "gamma": 0.1}
    opts.update(options)
    return opts


def _load_mapped(keymap: Any, weights: Mapping[str, Tensor], modules: Mapping[str, nn.Module],
                 prefixes: Mapping[str, str]) -> dict[str, str]:
    """Load official ``weights`` through ``keymap`` into ``modules``; official key -> stage key for all of them."""
    from daefr.interop.keymap import load_official

    full = dict(weights)
    for ns, module in modules.items():  # LPIPS scaling constants: ours are the official constants
        for key, value in module.state_dict().items():
            if key.startswith("scaling_layer."):
                official = next(o for o in _official_names(keymap, f"{ns}.{key}"))
                full.setdefault(official, value.clone())
    report = load_official(keymap, full, modules, context="training-parity recipe weights")
    if report.not_loaded:
        raise AssertionError(f"recipe keys not loaded: {sorted(report.not_loaded)[:5]}")
    names: dict[str, str] = {}
    for official, ours in {**report.mapped, **report.name_only}.items():
        ns, rest = ours.split(".", 1)
        names[official] = f"{prefixes[ns]}.{rest}" if prefixes[ns] else rest
    return names


def _official_names(keymap: Any, ours: str) -> Iterator[str]:
    for rule in keymap.rules:
        if rule.target and ours.startswith(rule.target):
            yield rule.source + ours[len(rule.target):]


def build_stage(fixture: TrainingFixture, official_quirks: bool = True, **options: Any) -> StageUnderTest:
    """Our stage for ``fixture`` with its tiny architecture, recipe weights and fixture LPIPS dropout."""
    from daefr.interop.keymap import ASSOCIATION_STAGE_KEYMAP, CODEBOOK_STAGE_KEYMAP
    from daefr.interop.keymap_daefr import DAEFR_FINAL_KEYMAP
    from daefr.stages import AssociationStage, CodebookStage, RestorationStage

    params = fixture.params
    dd = dict(params["ddconfig"]["params"])
    batch_size = int(fixture.batch(0)["lq" if "lq" in fixture.batch(0) else "gt"].shape[0])
    opts = _stage_options(fixture, batch_size, {"official_quirks": official_quirks, **options})
    weights = fixture.recipe_state_dict()
    dropouts: list[FixtureDropout] = []
    stage: Any
    if fixture.name.startswith("codebook"):
        target: Literal["hq", "lq"] = "hq" if params.get("image_key", "gt") == "gt" else "lq"
        stage = CodebookStage(**_autoencoder_specs(dd), loss=_loss_spec(params["lossconfig"]["params"]),
                              target=target, **opts)
        modules = {"vqgan": stage.vqgan, "discriminator": stage.loss.discriminator, "lpips": stage.loss.perceptual}
        prefixes = {"vqgan": "vqgan", "discriminator": "loss.discriminator", "lpips": "loss.perceptual"}
        names = _load_mapped(CODEBOOK_STAGE_KEYMAP, weights, modules, prefixes)
        dropouts += install_fixture_dropout(stage.loss.perceptual, fixture, opt=0)
        order = [0, 1]
        watched = {"xrec": stage.vqgan.decoder, "disc_out": stage.loss.discriminator}
    elif fixture.name.startswith("association"):
        spec = _loss_spec(params["lossconfig"]["params"])
        stage = AssociationStage(**_autoencoder_specs(dd), loss=spec, lq_loss=spec, **opts)
        modules = {"hq": stage.hq, "lq": stage.lq, "hq_discriminator": stage.loss_hq.discriminator,
                   "lq_discriminator": stage.loss_lq.discriminator, "hq_lpips": stage.loss_hq.perceptual,
                   "lq_lpips": stage.loss_lq.perceptual, "association": stage.association}
        prefixes = {"hq": "hq", "lq": "lq", "hq_discriminator": "loss_hq.discriminator",
                    "lq_discriminator": "loss_lq.discriminator", "hq_lpips": "loss_hq.perceptual",
                    "lq_lpips": "loss_lq.perceptual", "association": "association"}
        names = _load_mapped(ASSOCIATION_STAGE_KEYMAP, weights, modules, prefixes)
        dropouts += install_fixture_dropout(stage.loss_hq.perceptual, fixture, opt=0)
        dropouts += install_fixture_dropout(stage.loss_lq.perceptual, fixture, opt=2)
        order = [0, 2, 1, 3]  # official: ae_HQ, disc_HQ, ae_LQ, disc_LQ; ours: ae_HQ, ae_LQ, disc_HQ, disc_LQ
        watched = {"HQ_xrec": stage.hq.decoder, "LQ_xrec": stage.lq.decoder,
                   "disc_HQ_out": stage.loss_hq.discriminator, "disc_LQ_out": stage.loss_lq.discriminator}
    elif fixture.name.startswith("restoration"):
        arch = {k: dd[k] for k in (*_LAYOUT_KEYS, "embed_dim", "n_embed", "in_channels", "out_ch")}
        stage = RestorationStage(arch=arch, log_rec_loss=True, **opts)
        modules = {ns: getattr(stage.net, ns) for ns in
                   ("restorer", "target_encoder", "target_quant_conv", "assoc_hq_codebook", "assoc_lq_codebook")}
        names = _load_mapped(DAEFR_FINAL_KEYMAP, weights, modules, {ns: f"net.{ns}" for ns in modules})
        order = [0]
        watched = {"xrec": stage.net.restorer.decoder}
    else:
        raise ValueError(f"unknown training fixture {fixture.name!r}; expected one of {FIXTURES}")
    missing = [k for k in fixture.meta["state_dict"] if k not in names]
    if missing:
        raise AssertionError(f"official keys without a counterpart in our stage: {missing[:5]}")
    return StageUnderTest(stage, names, order, dropouts, watched)


# ----- running through a Trainer ---------------------------------------------------------------------------
@dataclass
class Call:
    """One optimizer step of our loop: which optimizer, at which batch, and the gradients it stepped on."""

    batch: int
    opt: int
    grads: dict[str, Tensor]  # our parameter name -> gradient (only parameters with a gradient)


@dataclass
class Record:
    """What :func:`run_stage` observed."""

    calls: list[Call] = field(default_factory=list)
    logs: list[dict[str, Tensor]] = field(default_factory=list)  # per batch: name -> value
    before: list[dict[str, Tensor]] = field(default_factory=list)  # state dict before each batch
    after: list[dict[str, Tensor]] = field(default_factory=list)  # state dict after each batch
    adam: list[list[dict[str, dict[str, Any] | None]]] = field(default_factory=list)  # per batch, per optimizer
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    outputs: list[dict[str, list[Tensor]]] = field(default_factory=list)  # per batch: watched name -> outputs


def _state(stage: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in stage.state_dict(keep_vars=True).items()}


def _make_recorder(record: Record, stage: nn.Module) -> Any:
    from lightning.pytorch import Callback

    param_names = {id(p): n for n, p in stage.named_parameters()}
    batch_now = [0]

    class _Recorder(Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            record.optimizers = list(trainer.optimizers)
            for index, opt in enumerate(trainer.optimizers):
                # after the step: under automatic optimisation the gradients only exist once step() has run
                # its closure; the step leaves them as they were, and they are zeroed later in both modes
                opt.register_step_post_hook(self._post_step(index))

        @staticmethod
        def _post_step(index: int) -> Callable[..., None]:
            def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
                grads = {param_names[id(p)]: p.grad.detach().clone()
                         for group in optimizer.param_groups for p in group["params"] if p.grad is not None}
                record.calls.append(Call(batch_now[0], index, grads))
            return hook

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            batch_now[0] = batch_idx
            record.before.append(_state(pl_module))
            record.logs.append({})
            record.outputs.append({})

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            record.after.append(_state(pl_module))
            states = []
            for opt in trainer.optimizers:
                per_key: dict[str, dict[str, Any] | None] = {}
                for group in opt.param_groups:
                    for p in group["params"]:
                        st = opt.state.get(p)
                        per_key[param_names[id(p)]] = (None if not st else
                                                       {"step": float(st["step"]), "exp_avg": st["exp_avg"].clone(),
                                                        "exp_avg_sq": st["exp_avg_sq"].clone()})
                states.append(per_key)
            record.adam.append(states)

    return _Recorder()


def run_stage(under_test: StageUnderTest, fixture: TrainingFixture) -> Record:
    """Fit our stage on the fixture's batches with a real Lightning Trainer (CPU, one process); the record."""
    from lightning.pytorch import Trainer
    from torch.utils.data import DataLoader

    stage = under_test.stage
    record = Record()
    original_log = stage.log

    def log(name: str, value: Any, *args: Any, **kwargs: Any) -> None:  # observe, then log as usual
        if record.logs:
            record.logs[-1][name] = torch.as_tensor(value).detach().clone()
        original_log(name, value, *args, **kwargs)

    stage.log = log

    def watch(name: str) -> Callable[..., None]:
        def hook(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            if record.outputs:
                record.outputs[-1].setdefault(name, []).append(output.detach().clone())
        return hook

    handles = [module.register_forward_hook(watch(name)) for name, module in under_test.watched.items()]
    batches = []
    for i in range(len(fixture.iterations)):
        official = fixture.batch(i)
        ours = {"hq": official["gt"]}
        if "lq" in official:
            ours["lq"] = official["lq"]
        batches.append(ours)
    loader: DataLoader[dict[str, Tensor]] = DataLoader(batches, batch_size=None, shuffle=False)  # type: ignore[arg-type]
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                      limit_val_batches=0, callbacks=[_make_recorder(record, stage)])
    try:
        trainer.fit(stage, train_dataloaders=loader)
    finally:
        del stage.log
        for handle in handles:
            handle.remove()
    return record


# ----- comparisons -----------------------------------------------------------------------------------------
def _close(ours: float, ref: float, rtol: float, atol: float) -> bool:
    return abs(ours - ref) <= atol + rtol * abs(ref)


#: official logged name -> our logged name, per official optimizer call; None: a term whose weight is 0 here.
LOGGED_NAMES: dict[str, list[dict[str, str | None]]] = {
    "codebook": [
        {"train/aeloss": "train/total_loss", "train/total_loss": "train/total_loss",
         "Codebook_loss": "train/quant_loss", "train/quant_loss": "train/quant_loss",
         "Rec_loss": "train/nll_loss", "train/rec_loss": "train/nll_loss", "train/nll_loss": "train/nll_loss",
         "train/p_loss": "train/p_loss", "train/p_style_loss": None, "train/d_weight": "train/d_weight",
         "train/disc_factor": "train/disc_factor", "train/g_loss": "train/g_loss"},
        {"train/discloss": "train/disc_loss", "train/disc_loss": "train/disc_loss",
         "train/logits_real": "train/logits_real", "train/logits_fake": "train/logits_fake"},
    ],
    "association": [],  # filled below (same table for both branches)
    "restoration": [
        {"BCE_loss": "train/ce_loss", "train/BCE_loss": "train/ce_loss", "L2_loss": "train/l2_loss",
         "train/L2_loss": "train/l2_loss", "Rec_loss": "train/rec_loss", "train/Rec_loss": "train/rec_loss"},
    ],
}
for _b, _B in (("hq", "HQ"), ("lq", "LQ")):
    _assoc = "Associate_loss" if _b == "hq" else "LQ_Associate_loss"
    LOGGED_NAMES["association"] += [
        {_assoc: f"train/{_b}/clip_loss", f"{_B}_Rec_loss": f"train/{_b}/nll_loss",
         f"train/{_B}_aeloss": f"train/{_b}/total_loss", "train/CLIP_loss": f"train/{_b}/clip_loss",
         "train/quant_loss": f"train/{_b}/quant_loss", "train/nll_loss": f"train/{_b}/nll_loss",
         "train/rec_loss": f"train/{_b}/nll_loss", "train/p_loss": f"train/{_b}/p_loss", "train/p_style_loss": None,
         "train/d_weight": f"train/{_b}/d_weight", "train/disc_factor": f"train/{_b}/disc_factor",
         "train/g_loss": f"train/{_b}/g_loss", "train/total_loss": f"train/{_b}/total_loss"},
        {f"train/{_B}_discloss": f"train/{_b}/disc_loss", "train/disc_loss": f"train/{_b}/disc_loss",
         "train/logits_real": f"train/{_b}/logits_real", "train/logits_fake": f"train/{_b}/logits_fake"},
    ]
#: name of our logged value that equals the tensor ``training_step`` returned, per official call
RETURNED_LOSS: dict[str, list[str]] = {
    "codebook": ["train/total_loss", "train/disc_loss"],
    "association": ["train/hq/total_loss", "train/hq/disc_loss", "train/lq/total_loss", "train/lq/disc_loss"],
    "restoration": ["train/loss"],
}


def _kind(fixture: TrainingFixture) -> str:
    return fixture.name.split("_")[0]


def check_logged(fixture: TrainingFixture, record: Record, tol: Tolerances = TOL) -> list[str]:
    """Every logged value (and the returned loss) of every official call against ours."""
    failures: list[str] = []
    table = LOGGED_NAMES[_kind(fixture)]
    for i, it in enumerate(fixture.iterations):
        ours = record.logs[i]
        for call in it["calls"]:
            o = int(call["optimizer_idx"]) if call["optimizer_idx"] is not None else 0
            names = table[o]
            items = [(name, entry["value"]) for name, entry in call["logged"].items()]
            items.append(("<returned loss>", call["loss"]))
            for name, ref in items:
                our_name = RETURNED_LOSS[_kind(fixture)][o] if name == "<returned loss>" else names.get(name, "?")
                where = f"it{i}.opt{o} {name}"
                if our_name == "?":
                    failures.append(f"{where}: no counterpart in our logs (add it to LOGGED_NAMES)")
                    continue
                if our_name is None:
                    if ref != 0.0:
                        failures.append(f"{where}: official {ref} but the term is not computed by us (weight 0)")
                    continue
                if our_name not in ours:
                    failures.append(f"{where}: we did not log {our_name}")
                    continue
                value = float(ours[our_name].float().reshape(-1)[0])
                rtol = tol.d_weight_rtol if "d_weight" in name else tol.logged_rtol
                exact = ref == 0.0
                if (exact and value != 0.0) or (not exact and not _close(value, ref, rtol, tol.logged_atol)):
                    failures.append(f"{where}: ours ({our_name}) {value:.9g} vs official {ref:.9g}")
    return failures


def _calls_by_official(fixture: TrainingFixture, under_test: StageUnderTest, record: Record) -> list[list[Call]]:
    per_batch: list[list[Call]] = [[] for _ in fixture.iterations]
    for call in record.calls:
        per_batch[call.batch].append(call)
    return per_batch


def check_order(fixture: TrainingFixture, under_test: StageUnderTest, record: Record) -> list[str]:
    """Our optimizers step once per batch each, in the official order."""
    failures = []
    expected = [under_test.opt_order[int(c["optimizer_idx"] or 0)] for c in fixture.iterations[0]["calls"]]
    for i, calls in enumerate(_calls_by_official(fixture, under_test, record)):
        got = [c.opt for c in calls]
        if got != expected:
            failures.append(f"batch {i}: our optimizers stepped in the order {got}, official order is {expected}")
    return failures


def check_gradients(fixture: TrainingFixture, under_test: StageUnderTest, record: Record,
                    tol: Tolerances = TOL) -> list[str]:
    """Gradient checksums of every official call and the named full gradients, against the grads we stepped on."""
    failures: list[str] = []
    noise = fixture.noise_keys()
    names = under_test.names
    for i, (it, calls) in enumerate(zip(fixture.iterations, _calls_by_official(fixture, under_test, record))):
        by_opt = {c.opt: c for c in calls}
        for call in it["calls"]:
            o = int(call["optimizer_idx"] or 0)
            where = f"it{i}.opt{o}"
            ours_call = by_opt.get(under_test.opt_order[o])
            if ours_call is None:
                failures.append(f"{where}: our optimizer {under_test.opt_order[o]} did not step")
                continue
            ref_keys = set(call["grad_checksums"])
            our_keys = {k for k, n in names.items() if n in ours_call.grads}
            if ref_keys != our_keys:
                failures.append(f"{where}: parameters with a gradient differ: only official "
                                f"{sorted(ref_keys - our_keys)[:4]}, only ours {sorted(our_keys - ref_keys)[:4]}")
            for key in sorted(ref_keys & our_keys):
                g = ours_call.grads[names[key]]
                s, a = checksum(g)
                ref_s, ref_a = call["grad_checksums"][key]
                if call["all_grads_exactly_zero"]:
                    if a != 0.0:
                        failures.append(f"{where} {key}: official gradient exactly 0, ours |g| sum {a:.3g}")
                    continue
                if key in noise:
                    if a >= tol.noise_grad_abs_sum:
                        failures.append(f"{where} {key}: noise-gradient key with |g| sum {a:.3g}")
                    continue
                bound = tol.grad_rel * ref_a
                if abs(s - ref_s) > bound or abs(a - ref_a) > bound:
                    failures.append(f"{where} {key}: grad checksum ours ({s:.6g}, {a:.6g}) vs official "
                                    f"({ref_s:.6g}, {ref_a:.6g})")
            for tensor_key in call["grads_full"]:
                key = tensor_key.split(".grad.", 1)[1]
                ref = fixture.tensors[tensor_key]
                full = ours_call.grads.get(names[key])
                if full is None:
                    failures.append(f"{where} {key}: no gradient on our side")
                    continue
                failures += _full_grad(where, key, full, ref, key in noise, tol)
    return failures


def _full_grad(where: str, key: str, ours: Tensor, ref: Tensor, noise: bool, tol: Tolerances) -> list[str]:
    ours = ours.reshape(ref.shape)
    if key.endswith("self_attn.in_proj_bias"):  # elements [C:2C] are the key bias: rounding noise
        c = ref.numel() // 3
        keep = torch.ones(ref.numel(), dtype=torch.bool)
        keep[c:2 * c] = False
        if float(ours[~keep].abs().sum()) >= tol.noise_grad_abs_sum:
            return [f"{where} {key}: key-bias gradient slice is not noise-sized"]
        ours, ref = ours[keep], ref[keep]
    if noise:
        return [] if float(ours.abs().sum()) < tol.noise_grad_abs_sum else [f"{where} {key}: noise gradient too large"]
    scale = float(ref.abs().max())
    dev = float((ours - ref).abs().max())
    if scale == 0.0:
        return [] if dev == 0.0 else [f"{where} {key}: official gradient exactly 0, ours differs by {dev:.3g}"]
    return [] if dev <= tol.grad_rel * scale else [f"{where} {key}: full gradient deviates {dev:.3g} "
                                                   f"(max|g| {scale:.3g})"]


def check_outputs(fixture: TrainingFixture, under_test: StageUnderTest, record: Record,
                  atol_rel: float = 3e-3) -> list[str]:
    """Reconstructions and PatchGAN logit maps of every forward pass, in call order (one forward per optimizer).

    The official ``captured`` names ``xrec`` / ``HQ_xrec`` (one per call) and ``disc_out{n}`` (logit maps in
    call order) are compared with the outputs of our watched modules within ``atol_rel * max|x|``.
    """
    failures: list[str] = []
    for i, it in enumerate(fixture.iterations):
        expected: dict[str, list[str]] = {}
        for call in it["calls"]:
            for name, tensor_key in call["captured"].items():
                base = re.sub(r"\d+$", "", name)
                if base in under_test.watched:
                    expected.setdefault(base, []).append(tensor_key)
        for name, keys in expected.items():
            ours = record.outputs[i].get(name, [])
            if len(ours) != len(keys):
                failures.append(f"it{i} {name}: {len(ours)} forward passes, official {len(keys)}")
                continue
            for key, out in zip(keys, ours):
                ref = fixture.tensors[key]
                dev = float((out.reshape(ref.shape) - ref).abs().max())
                if dev > atol_rel * float(ref.abs().max()):
                    failures.append(f"{key}: ours deviates by {dev:.3g} (max|x| {float(ref.abs().max()):.3g})")
    return failures


def check_after(fixture: TrainingFixture, under_test: StageUnderTest, record: Record,
                tol: Tolerances = TOL) -> list[str]:
    """Parameters, updates, unchanged sets, BatchNorm buffers and Adam state after every batch."""
    failures: list[str] = []
    names = under_test.names
    noise = fixture.noise_keys()
    lr = fixture.lr
    flip = 2 * lr
    for i, it in enumerate(fixture.iterations):
        ref = it["after"]
        before, after = record.before[i], record.after[i]
        where = f"after it{i}"
        for key, (ref_s, ref_a) in ref["param_checksums"].items():
            s, a = checksum(after[names[key]])
            numel = after[names[key]].numel()
            allowance = tol.param_rel * ref_a + flip * (tol.delta_flips if key not in noise else numel * (i + 1))
            if abs(s - ref_s) > allowance or abs(a - ref_a) > allowance:
                failures.append(f"{where} {key}: parameter checksum ours ({s:.9g}, {a:.9g}) vs ({ref_s:.9g}, {ref_a:.9g})")
        total_flip = 0.0
        for key, (ref_s, ref_a) in ref["delta_checksums"].items():
            d = after[names[key]].double() - before[names[key]].double()
            s, a = checksum(d)
            if key in noise:
                if a > flip * d.numel():
                    failures.append(f"{where} {key}: noise-key update larger than 2*lr per element")
                continue
            total_flip += abs(s - ref_s)
            if abs(s - ref_s) > flip * tol.delta_flips or abs(a - ref_a) > tol.delta_abs_rel * ref_a + flip * tol.delta_flips:
                failures.append(f"{where} {key}: update checksum ours ({s:.6g}, {a:.6g}) vs ({ref_s:.6g}, {ref_a:.6g})")
        if total_flip > flip * tol.delta_flips_total:
            failures.append(f"{where}: update sums deviate by {total_flip:.3g} in total (> {flip * tol.delta_flips_total:.3g})")
        ref_unchanged = set(ref["unchanged"])
        our_unchanged = {k for k in ref["param_checksums"] if torch.equal(after[names[k]], before[names[k]])}
        if ref_unchanged != our_unchanged:
            failures.append(f"{where}: bit-identical parameters differ: only official {sorted(ref_unchanged - our_unchanged)[:4]}, "
                            f"only ours {sorted(our_unchanged - ref_unchanged)[:4]}")
        for key, (ref_s, ref_a) in ref["buffer_checksums"].items():
            s, a = checksum(after[names[key]])
            if key.endswith("num_batches_tracked"):
                if s != ref_s:
                    failures.append(f"{where} {key}: {s} vs official {ref_s}")
            elif abs(s - ref_s) > tol.buffer_rtol * ref_a or abs(a - ref_a) > tol.buffer_rtol * ref_a:
                failures.append(f"{where} {key}: buffer checksum ours ({s:.9g}, {a:.9g}) vs ({ref_s:.9g}, {ref_a:.9g})")
        for tensor_key in ref["full"] + ref["full_buffers"]:
            key = tensor_key.split(".after.", 1)[1]
            expected = fixture.tensors[tensor_key]
            ours = after[names[key]].reshape(expected.shape)
            failures += _full_after(where, key, ours, expected, key in noise, flip * (i + 1), tol,
                                    buffer=tensor_key in ref["full_buffers"])
        failures += _check_adam(where, fixture, under_test, record.adam[i], ref["adam_state"], tol)
    return failures


def _full_after(where: str, key: str, ours: Tensor, ref: Tensor, noise: bool, flip: float, tol: Tolerances,
                buffer: bool) -> list[str]:
    if ours.dtype != ref.dtype:
        return [f"{where} {key}: dtype {ours.dtype} vs official {ref.dtype}"]
    if not ours.is_floating_point():
        return [] if torch.equal(ours, ref) else [f"{where} {key}: {ours.tolist()} vs official {ref.tolist()}"]
    dev = (ours - ref).abs()
    if buffer:
        bad = dev > tol.buffer_rtol * ref.abs() + 1e-7
        return [] if not bool(bad.any()) else [f"{where} {key}: buffer deviates by {float(dev.max()):.3g}"]
    if noise:
        return [] if float(dev.max()) <= flip * 1.01 + tol.param_full_atol else [f"{where} {key}: noise key off by "
                                                                                   f"{float(dev.max()):.3g}"]
    off = dev > tol.param_full_atol
    flipped = int(off.sum())
    if flipped and (flipped > tol.flip_elements or float(dev.max()) > flip * 1.01 + tol.param_full_atol):
        return [f"{where} {key}: {flipped} elements off by up to {float(dev.max()):.3g}"]
    return []


def _check_adam(where: str, fixture: TrainingFixture, under_test: StageUnderTest,
                ours: list[dict[str, dict[str, Any] | None]],
                ref: list[dict[str, Any] | None], tol: Tolerances) -> list[str]:
    failures = []
    noise = fixture.noise_keys()
    for o, ref_state in enumerate(ref):
        state = ours[under_test.opt_order[o]]
        if ref_state is None:
            if any(v is not None for v in state.values()):
                failures.append(f"{where} optimizer {o}: official Adam holds no state, ours does")
            continue
        for key, entry in ref_state.items():
            if under_test.names[key] not in state:
                failures.append(f"{where} optimizer {o}: {key} is not in our optimizer")
                continue
            mine = state[under_test.names[key]]
            if entry is None or mine is None:
                if entry is not mine:
                    failures.append(f"{where} optimizer {o} {key}: Adam state official {entry is not None}, ours "
                                    f"{mine is not None}")
            else:
                if mine["step"] != float(entry["step"]):
                    failures.append(f"{where} optimizer {o} {key}: Adam step {mine['step']} vs official {entry['step']}")
                if key in noise:
                    continue
                for moment in ("exp_avg", "exp_avg_sq"):
                    s, a = checksum(mine[moment])
                    ref_s, ref_a = entry[moment]
                    bound = tol.adam_rel * ref_a * (2 if moment == "exp_avg_sq" else 1)
                    if abs(s - ref_s) > bound or abs(a - ref_a) > bound:
                        failures.append(f"{where} optimizer {o} {key}: {moment} ({s:.6g}, {a:.6g}) vs ({ref_s:.6g}, {ref_a:.6g})")
    return failures


def check_optimizers(fixture: TrainingFixture, under_test: StageUnderTest, record: Record) -> list[str]:
    """Each official optimizer's param groups (as key sets), lr, betas, eps and weight decay against ours."""
    failures = []
    stage = under_test.stage
    to_official = {ours: off for off, ours in under_test.names.items()}
    param_names = {id(p): n for n, p in stage.named_parameters()}
    if len(record.optimizers) != len(fixture.meta["optimizers"]):
        return [f"we have {len(record.optimizers)} optimizers, official {len(fixture.meta['optimizers'])}"]
    for o, ref in enumerate(fixture.meta["optimizers"]):
        opt = record.optimizers[under_test.opt_order[o]]
        if type(opt).__name__ != ref["class"]:
            failures.append(f"optimizer {o}: {type(opt).__name__} vs official {ref['class']}")
        groups = opt.param_groups
        if len(groups) != len(ref["param_groups"]):
            failures.append(f"optimizer {o}: {len(groups)} param groups vs official {len(ref['param_groups'])}")
            continue
        for g, (ours, theirs) in enumerate(zip(groups, ref["param_groups"])):
            keys = {to_official.get(param_names[id(p)], param_names[id(p)]) for p in ours["params"]}
            if keys != set(theirs["keys"]):
                failures.append(f"optimizer {o} group {g}: only ours {sorted(keys - set(theirs['keys']))[:4]}, "
                                f"only official {sorted(set(theirs['keys']) - keys)[:4]}")
            for hp in ("lr", "eps", "weight_decay", "amsgrad"):
                if ours[hp] != theirs[hp]:
                    failures.append(f"optimizer {o} group {g}: {hp} {ours[hp]} vs official {theirs[hp]}")
            if tuple(ours["betas"]) != tuple(theirs["betas"]):
                failures.append(f"optimizer {o} group {g}: betas {ours['betas']} vs official {theirs['betas']}")
    in_none = {k for k in fixture.meta["state_dict"] if k in under_test.names} - {
        k for ref in fixture.meta["optimizers"] for g in ref["param_groups"] for k in g["keys"]}
    trained = {id(p) for opt in record.optimizers for g in opt.param_groups for p in g["params"]}
    for key in sorted(in_none):
        our_key = under_test.names[key]
        param = dict(stage.named_parameters()).get(our_key)
        if param is not None and id(param) in trained:
            failures.append(f"{key} is in no official optimizer but ours trains {our_key}")
    return failures


def check_initial_weights(fixture: TrainingFixture, under_test: StageUnderTest, record: Record) -> list[str]:
    """The weights our stage started from equal the fixture's ``weights_checksums`` (recipe loaded correctly)."""
    failures = []
    start = record.before[0]
    for key, (ref_s, ref_a) in fixture.meta["weights_checksums"].items():
        s, a = checksum(start[under_test.names[key]])
        if abs(s - ref_s) > 1e-9 * max(1.0, ref_a) or abs(a - ref_a) > 1e-9 * max(1.0, ref_a):
            failures.append(f"{key}: initial checksum ours ({s:.12g}, {a:.12g}) vs ({ref_s:.12g}, {ref_a:.12g})")
    return failures


def run_fixture(directory: str | Path, name: str, **options: Any) -> tuple[TrainingFixture, StageUnderTest, Record]:
    """Load fixture ``name``, build our stage (``options`` go to the stage) and run it on one thread."""
    from daefr.testing.parity import single_thread

    fixture = TrainingFixture(directory, name)
    with single_thread():
        under_test = build_stage(fixture, **options)
        record = run_stage(under_test, fixture)
    return fixture, under_test, record


def all_failures(fixture: TrainingFixture, under_test: StageUnderTest, record: Record) -> dict[str, list[str]]:
    """Every check's failures by check name (for reports and quirk measurements)."""
    return {
        "initial weights": check_initial_weights(fixture, under_test, record),
        "optimizers": check_optimizers(fixture, under_test, record),
        "order": check_order(fixture, under_test, record),
        "logged": check_logged(fixture, record),
        "outputs": check_outputs(fixture, under_test, record),
        "gradients": check_gradients(fixture, under_test, record),
        "after": check_after(fixture, under_test, record),
    }


def deviation_summary(fixture: TrainingFixture, under_test: StageUnderTest, record: Record) -> dict[str, float]:
    """Largest deviations from the fixture (relative as in the README's tolerance table; noise keys excluded)."""
    out = {"logged_rel": 0.0, "d_weight_rel": 0.0, "grad_checksum_rel": 0.0, "full_grad_rel": 0.0,
           "param_full_abs": 0.0, "buffer_checksum_rel": 0.0}
    names, noise = under_test.names, fixture.noise_keys()
    table, returned = LOGGED_NAMES[_kind(fixture)], RETURNED_LOSS[_kind(fixture)]
    calls = _calls_by_official(fixture, under_test, record)
    for i, it in enumerate(fixture.iterations):
        by_opt = {c.opt: c for c in calls[i]}
        for call in it["calls"]:
            o = int(call["optimizer_idx"] or 0)
            pairs = [(n, e["value"]) for n, e in call["logged"].items()] + [("<returned>", call["loss"])]
            for name, ref in pairs:
                ours = returned[o] if name == "<returned>" else table[o].get(name)
                if ours is None or ours not in record.logs[i] or ref == 0.0:
                    continue
                rel = abs(float(record.logs[i][ours].float().reshape(-1)[0]) - ref) / abs(ref)
                slot = "d_weight_rel" if "d_weight" in name else "logged_rel"
                out[slot] = max(out[slot], rel)
            ours_call = by_opt.get(under_test.opt_order[o])
            if ours_call is None or call["all_grads_exactly_zero"]:
                continue
            for key, (ref_s, ref_a) in call["grad_checksums"].items():
                if key in noise or names[key] not in ours_call.grads:
                    continue
                s, a = checksum(ours_call.grads[names[key]])
                out["grad_checksum_rel"] = max(out["grad_checksum_rel"], abs(s - ref_s) / ref_a, abs(a - ref_a) / ref_a)
            for tensor_key in call["grads_full"]:
                key = tensor_key.split(".grad.", 1)[1]
                ref_t = fixture.tensors[tensor_key]
                if key in noise or key.endswith("in_proj_bias") or names[key] not in ours_call.grads:
                    continue
                dev = float((ours_call.grads[names[key]].reshape(ref_t.shape) - ref_t).abs().max())
                out["full_grad_rel"] = max(out["full_grad_rel"], dev / float(ref_t.abs().max()))
        after = record.after[i]
        for tensor_key in it["after"]["full"]:
            key = tensor_key.split(".after.", 1)[1]
            if key in noise:
                continue
            ref_t = fixture.tensors[tensor_key]
            out["param_full_abs"] = max(out["param_full_abs"], float((after[names[key]].reshape(ref_t.shape) - ref_t)
                                                                     .abs().max()))
        for key, (ref_s, ref_a) in it["after"]["buffer_checksums"].items():
            if ref_a:
                s, a = checksum(after[names[key]])
                out["buffer_checksum_rel"] = max(out["buffer_checksum_rel"], abs(s - ref_s) / ref_a, abs(a - ref_a) / ref_a)
    return out


def main() -> None:
    """Print the deviation summary of every fixture with official_quirks on and off (used for docs/training.md)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--dir", default=None, help=f"fixture folder (default ${ENV_VAR} or ../shared/parity/training)")
    args = parser.parse_args()
    directory = Path(args.dir) if args.dir else training_parity_dir(Path(__file__).resolve().parents[3])
    for name in FIXTURES:
        for quirks in (True, False):
            run = run_fixture(directory, name, official_quirks=quirks)
            summary = deviation_summary(*run)
            failing = {k: len(v) for k, v in all_failures(*run).items() if v}
            print(f"{name} official_quirks={quirks}: " + ", ".join(f"{k} {v:.2e}" for k, v in summary.items())
                  + f"; failing checks {failing or 'none'}")


if __name__ == "__main__":
    main()


def run_or_skip(repo_root: Path, name: str) -> tuple[TrainingFixture, StageUnderTest, Record]:
    """:func:`run_fixture` on ``name`` in the fixture folder, or skip the calling test when it is absent."""
    import pytest

    directory = training_parity_dir(repo_root)
    if not (directory / f"{name}.json").is_file():
        pytest.skip(f"training-parity fixtures not found in {directory} (set ${ENV_VAR})")
    return run_fixture(directory, name)


def assert_no_failures(failures: list[str]) -> None:
    """Fail with the first 40 deviations listed."""
    assert not failures, f"{len(failures)} deviations:\n" + "\n".join(failures[:40])

