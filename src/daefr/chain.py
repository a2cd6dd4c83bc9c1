"""Chains: the DAEFR training stages run in order, each starting from the previous stages' checkpoints.

A chain file (``configs/<recipe>/chain.yaml``) names ordinary stage configs and how their checkpoints
feed each other::

    name: tiny
    out: runs/tiny                    # each stage writes into <out>/<stage>/
    overrides: {seed_everything: 0}   # dotted keys applied to every stage (a mapping value replaces)
    stages:
      - {name: hq_codebook, config: hq_codebook.yaml}
      - {name: lq_codebook, config: lq_codebook.yaml}
      - name: association
        config: association.yaml
        inputs: {model.init_args.init_hq_from: hq_codebook, model.init_args.init_lq_from: lq_codebook}

:func:`run_chain` writes every stage's configuration as run (``<out>/<stage>/stage_config.yaml``), points its
outputs (checkpoints, logs, exported restorer) into the stage folder, runs it with ``daefr fit``, and
records what ran in ``<out>/chain.json``: configuration hashes, checkpoints with sha256, times and final
metrics. A rerun skips finished stages whose configuration is unchanged and resumes an interrupted stage
from its ``last.ckpt`` (Lightning restores optimizer, schedule, RNG and data position exactly).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from lightning.pytorch import Callback, LightningModule, Trainer
from omegaconf import DictConfig, ListConfig, OmegaConf

from daefr.errors import ConfigError, DaefrError

MANIFEST = "chain.json"
MANIFEST_FORMAT = "daefr-chain-v1"
FINAL_CHECKPOINT = "final.ckpt"
METRICS_FILE = "final_metrics.json"
STAGE_CONFIG = "stage_config.yaml"
_CHECKPOINT_CALLBACK = "lightning.pytorch.callbacks.ModelCheckpoint"


class ChainError(DaefrError):
    """A chain cannot run as asked (changed configuration of a finished stage, a stage failed, ...)."""


@dataclass(frozen=True)
class ChainStage:
    """One stage of a chain: its config file, the checkpoints it takes from earlier stages, overrides."""

    name: str
    config: Path
    inputs: dict[str, str] = field(default_factory=dict)  # dotted config key -> earlier stage name
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Chain:
    """A parsed chain file: stages in order, the output folder and the overrides shared by all stages."""

    name: str
    path: Path
    out: Path
    stages: tuple[ChainStage, ...]
    overrides: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None  # seed_everything of every stage (and data.init_args.seed where the config sets one)
    group: str | None = None  # W&B group of the stages' runs (default: the chain's name)
    tags: tuple[str, ...] = ()  # W&B tags of the stages' runs

    def stage_dir(self, stage: str) -> Path:
        """The folder of one stage's outputs."""
        return self.out / stage

    def final_checkpoint(self, stage: str) -> Path:
        """The checkpoint a finished stage hands to the next ones."""
        return self.stage_dir(stage) / "checkpoints" / FINAL_CHECKPOINT


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["a.b=1", "c={x: 2}"]`` -> ``{"a.b": 1, "c": {"x": 2}}`` (values read as YAML)."""
    parsed: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not KEY=VALUE (e.g. trainer.max_steps=100)")
        try:
            parsed[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({exc})") from None
    return parsed


def load_chain(path: str | Path, out: str | Path | None = None, overrides: Sequence[str] = ()) -> Chain:
    """Read a chain file; ``overrides`` are ``KEY=VALUE`` for every stage or ``STAGE.KEY=VALUE`` for one."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"chain file {path} not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("stages"), list) or not raw["stages"]:
        raise ConfigError(f"{path}: a chain file needs a non-empty 'stages' list (see docs/training.md, Chains)")
    unknown = set(raw) - {"name", "out", "overrides", "stages", "seed"}
    if unknown:
        raise ConfigError(f"{path}: unknown chain keys {sorted(unknown)}; use name, out, seed, overrides, stages")
    stages: list[ChainStage] = []
    for i, entry in enumerate(raw["stages"]):
        if not isinstance(entry, dict) or "name" not in entry or "config" not in entry:
            raise ConfigError(f"{path}: stage {i} needs 'name' and 'config'")
        extra = set(entry) - {"name", "config", "inputs", "overrides"}
        if extra:
            raise ConfigError(f"{path}: stage {entry['name']!r} has unknown keys {sorted(extra)}")
        name = str(entry["name"])
        if name in {s.name for s in stages}:
            raise ConfigError(f"{path}: stage name {name!r} appears twice")
        inputs = {str(k): str(v) for k, v in (entry.get("inputs") or {}).items()}
        for key, source in inputs.items():
            if source not in {s.name for s in stages}:
                raise ConfigError(f"{path}: stage {name!r} input {key} names {source!r}, "
                                  f"which is not an earlier stage")
        config = (path.parent / str(entry["config"])).resolve()
        if not config.is_file():
            raise ConfigError(f"{path}: stage {name!r} config {config} not found")
        stages.append(ChainStage(name, config, inputs, dict(entry.get("overrides") or {})))
    shared = dict(raw.get("overrides") or {})
    names = {s.name for s in stages}
    # Precedence, lowest first: stage file < chain `overrides` < the chain's per-stage `overrides` < the
    # command line's KEY=VALUE (every stage) < the command line's STAGE.KEY=VALUE (one stage).
    per_stage: list[tuple[str, str, Any]] = []
    for key, value in parse_overrides(overrides).items():
        head, _, rest = key.partition(".")
        if head in names and rest:
            per_stage.append((head, rest, value))
        else:
            shared[key] = value
            stages = [ChainStage(s.name, s.config, s.inputs, _after(s.overrides, key, value)) for s in stages]
    for head, rest, value in per_stage:
        index = next(i for i, s in enumerate(stages) if s.name == head)
        stage = stages[index]
        stages[index] = ChainStage(stage.name, stage.config, stage.inputs, _after(stage.overrides, rest, value))
    out_dir = Path(out) if out is not None else Path(str(raw.get("out") or Path("runs") / path.stem))
    seed = raw.get("seed")
    if seed is not None and not isinstance(seed, int):
        raise ConfigError(f"{path}: seed must be an integer, got {seed!r}")
    return Chain(str(raw.get("name") or path.parent.name), path.resolve(), out_dir, tuple(stages), shared, seed)


def _after(overrides: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``overrides`` with ``key`` set last (applied after, so it wins over, every key it overlaps)."""
    kept = {k: v for k, v in overrides.items() if k != key}
    return {**kept, key: value}


def _set(config: DictConfig, key: str, value: Any) -> None:
    OmegaConf.update(config, key, value, merge=False, force_add=True)


def _route_outputs(config: DictConfig, chain: Chain, stage: ChainStage) -> None:
    """Point the stage's checkpoints, logs and exports into its folder; add the chain's recorder."""
    folder = chain.stage_dir(stage.name)
    _set(config, "trainer.default_root_dir", str(folder))
    loggers = OmegaConf.select(config, "trainer.logger")
    for logger in loggers if isinstance(loggers, ListConfig) else [loggers]:
        if isinstance(logger, DictConfig) and "class_path" in logger:
            args = logger.setdefault("init_args", {})
            args["save_dir"] = str(folder)
            if str(logger["class_path"]).endswith("WandbLogger"):
                args["group"], args["job_type"] = chain.group or chain.name, stage.name
                args["name"] = f"{chain.name}/{stage.name}"
                if chain.tags:
                    args["tags"] = sorted(set(args.get("tags") or []) | set(chain.tags))
    callbacks = OmegaConf.select(config, "trainer.callbacks") or ListConfig([])
    for callback in callbacks:
        if isinstance(callback, DictConfig) and callback.get("class_path") == _CHECKPOINT_CALLBACK:
            callback.setdefault("init_args", {})["dirpath"] = str(folder / "checkpoints")
    inputs = {artifact_name(chain, source): str(chain.final_checkpoint(source)) for source in stage.inputs.values()}
    callbacks.append({"class_path": "daefr.chain.ChainRecorder",
                      "init_args": {"checkpoint": str(chain.final_checkpoint(stage.name)),
                                    "metrics": str(folder / METRICS_FILE),
                                    "artifact": artifact_name(chain, stage.name), "inputs": inputs}})
    _set(config, "trainer.callbacks", callbacks)
    if OmegaConf.select(config, "model.init_args.export_path") is not None:
        _set(config, "model.init_args.export_path", str(folder / "restorer.safetensors"))


def stage_config(chain: Chain, stage: ChainStage) -> DictConfig:
    """The configuration a stage runs with: its file, the chain's overrides, outputs and inputs wired."""
    from daefr.config_files import load_composed

    config = load_composed(stage.config)  # the stage file over its `base:` files, as `daefr fit` reads it
    for key, value in {**chain.overrides, **stage.overrides}.items():
        _set(config, key, value)
    if chain.seed is not None:  # after the overrides, which may replace `data` wholesale
        _set(config, "seed_everything", chain.seed)
        if OmegaConf.select(config, "data.init_args.seed") is not None:
            _set(config, "data.init_args.seed", chain.seed)
    _route_outputs(config, chain, stage)
    for key, source in stage.inputs.items():
        _set(config, key, str(chain.final_checkpoint(source)))
    try:
        OmegaConf.resolve(config)
    except Exception as exc:  # noqa: BLE001 - interpolation errors come in several classes
        raise ConfigError(f"{stage.config}: {exc}") from None
    return config


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_manifest(chain: Chain) -> dict[str, Any]:
    """The chain's manifest, or an empty one when the chain never ran in ``chain.out``."""
    path = chain.out / MANIFEST
    if not path.is_file():
        return {"format": MANIFEST_FORMAT, "chain": chain.name, "stages": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ChainError(f"{path}: unreadable chain manifest ({exc}); move it away to start over") from None
    if data.get("format") != MANIFEST_FORMAT:
        raise ChainError(f"{path} is not a daefr chain manifest (format {data.get('format')!r})")
    return dict(data)


class ChainRecorder(Callback):
    """Saves the final checkpoint and metrics of a chain stage when training ends; logs it to W&B.

    ``last.ckpt`` is only as recent as the last ``every_n_train_steps`` multiple; the chain hands the
    state at the very end of training to the next stage. With a ``WandbLogger`` the checkpoint (and an
    exported restorer) becomes the model artifact ``artifact``, whose metadata lists the artifacts of its
    ``inputs`` (name -> checkpoint path) with their sha256; online, the inputs are also declared with
    ``use_artifact`` so W&B draws the lineage (wandb refuses ``use_artifact`` in offline mode).
    """

    def __init__(self, checkpoint: str, metrics: str, artifact: str | None = None,
                 inputs: dict[str, str] | None = None) -> None:
        self.checkpoint, self.metrics = checkpoint, metrics
        self.artifact, self.inputs = artifact, dict(inputs or {})

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Save the stage's final checkpoint; on rank 0 write its metrics JSON and log the W&B artifact if asked."""
        trainer.save_checkpoint(self.checkpoint)  # collective under DDP; rank 0 writes
        if not trainer.is_global_zero:
            return
        values = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
        _write_json(Path(self.metrics), {"global_step": trainer.global_step, "metrics": values})
        if self.artifact:
            from lightning.pytorch.loggers import WandbLogger

            for logger in trainer.loggers:
                if isinstance(logger, WandbLogger):
                    self._log_artifact(logger.experiment, trainer.global_step, values)

    def _log_artifact(self, run: Any, step: int, metrics: dict[str, float]) -> None:
        import wandb

        checkpoint = Path(self.checkpoint)
        inputs = {name: {"checkpoint": path, "sha256": sha256(Path(path))} for name, path in self.inputs.items()}
        artifact = wandb.Artifact(self.artifact or "", type="model", metadata={
            "checkpoint_sha256": sha256(checkpoint), "global_step": step, "inputs": inputs, "metrics": metrics})
        artifact.add_file(str(checkpoint), name=checkpoint.name)
        restorer = checkpoint.parent.parent / "restorer.safetensors"
        if restorer.is_file():
            artifact.add_file(str(restorer), name=restorer.name)
        if not run.settings._offline:
            for name in inputs:
                run.use_artifact(f"{name}:latest")
        run.log_artifact(artifact, aliases=["latest", f"step-{step}"])


def artifact_name(chain: Chain, stage: str) -> str:
    """W&B artifact name of a stage's final checkpoint (letters, digits, ``-``, ``_``, ``.`` only)."""
    raw = f"{chain.name}-{stage}"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in raw)


def _finish_wandb() -> None:
    """Close a W&B run a stage left open: Lightning's WandbLogger would reuse it for the next stage."""
    import sys

    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


def _config_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def process_rank() -> int:
    """This process's global rank as the launcher set it (torchrun, SLURM, Lightning's own launcher), else 0.

    Under DDP every process runs the whole chain, so that each stage's ``fit`` finds its peers; every rank
    makes the same decisions from the same files, and only rank 0 writes the manifest and moves folders.
    """
    for key in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "LOCAL_RANK"):
        value = os.environ.get(key, "")
        if value.strip().isdigit():
            return int(value)
    return 0


_LAUNCH_ENV = ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


_STARTED = time.time()  # when this process imported the chain runner


def launch_id() -> str | None:
    """An id shared by the processes of one external multi-process launch (torchrun, SLURM), else None."""
    world = max(int(os.environ.get(key, "1") or 1) for key in ("WORLD_SIZE", "SLURM_NTASKS"))
    if world <= 1:
        return None
    raw = (os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("SLURM_JOB_ID")
           or f"{os.environ.get('MASTER_ADDR', '')}-{os.environ.get('MASTER_PORT', '')}")
    restarts = os.environ.get("TORCHELASTIC_RESTART_COUNT") or os.environ.get("SLURM_RESTART_COUNT") or "0"
    raw = f"{raw}-{restarts}"
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in raw)


def _decision_file(chain: Chain, launch: str, stage: str) -> Path:
    return chain.out / f".launch-{launch}" / f"{stage}.json"


def _announce(chain: Chain, launch: str | None, stage: str, action: str, args: Sequence[str] = ()) -> None:
    """Rank 0 tells the other ranks of an external launch what it does with a stage."""
    if launch is not None:
        _write_json(_decision_file(chain, launch, stage), {"action": action, "args": list(args), "written": time.time()})


def _await_decision(chain: Chain, launch: str, stage: str) -> dict[str, Any]:
    path = _decision_file(chain, launch, stage)
    deadline = time.monotonic() + float(os.environ.get("DAEFR_CHAIN_WAIT", "3600"))

    def fresh() -> bool:  # written by this launch's rank 0 (ranks start within seconds of each other)
        try:
            return float(json.loads(path.read_text(encoding="utf-8")).get("written", 0)) >= _STARTED - 60
        except (OSError, ValueError):
            return False

    while not fresh():
        if time.monotonic() > deadline:
            raise ChainError(f"rank {process_rank()}: no word from rank 0 about stage {stage!r} ({path}) within "
                             f"$DAEFR_CHAIN_WAIT seconds; is the output folder on a filesystem all ranks share?")
        time.sleep(0.2)
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _follow(chain: Chain, launch: str, fit: Callable[[list[str]], int]) -> dict[str, Any]:
    """Ranks other than 0 of an external launch: run each stage as rank 0 decided (skip, train or resume)."""
    for stage in chain.stages:
        decision = _await_decision(chain, launch, stage.name)
        if decision["action"] == "skip":
            continue
        if decision["action"] != "fit":
            raise ChainError(f"rank 0 stopped the chain at stage {stage.name!r}; see its output")
        try:
            code = fit(list(decision["args"]))
        finally:
            _finish_wandb()
        if code != 0:
            raise ChainError(f"stage {stage.name!r} failed on rank {process_rank()} (exit code {code})")
    return read_manifest(chain)


def _end_distributed_stage(before: Mapping[str, str | None]) -> None:
    """Undo what a stage's DDP launch left in this process, so the next stage launches afresh.

    Lightning's own launcher re-runs only ``daefr fit --config <stage>`` in its extra processes (they end
    with the stage) and leaves ``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_*`` set here, which would make the next
    stage wait for processes that are gone. Under torchrun or SLURM the variables came from outside and
    stay; every rank closes the process group the same way and the next stage opens it again.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in before.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _move_aside(chain: Chain, stage: str) -> None:
    folder = chain.stage_dir(stage)
    if folder.exists() and process_rank() == 0:
        target = chain.out / ".previous" / f"{stage}-{time.strftime('%Y%m%d-%H%M%S')}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(folder), str(target))


def run_chain(
    chain: Chain,
    rerun: Sequence[str] = (),
    fit: Callable[[list[str]], int] | None = None,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the chain's stages in order, skipping finished ones and resuming an interrupted one.

    ``rerun`` names stages to run again from scratch (their old folders move to ``<out>/.previous/``);
    every later stage reruns too. ``fit`` runs ``daefr fit`` arguments (default: in this process).
    Returns the manifest.
    """
    if fit is None:
        from daefr.lightning_cli import run_lightning

        fit = run_lightning
    lead, launch = process_rank() == 0, launch_id()
    if launch is not None and not lead:
        return _follow(chain, launch, fit)
    if launch is not None:  # decisions of an earlier launch with the same id must not be followed
        shutil.rmtree(_decision_file(chain, launch, "x").parent, ignore_errors=True)
    try:
        return _lead(chain, rerun, fit, say, launch)
    except BaseException:
        if launch is not None:  # let the other ranks stop instead of waiting for a decision
            for stage in chain.stages:
                if not _decision_file(chain, launch, stage.name).is_file():
                    _announce(chain, launch, stage.name, "abort")
        raise


def _lead(chain: Chain, rerun: Sequence[str], fit: Callable[[list[str]], int], say: Callable[[str], None],
          launch: str | None) -> dict[str, Any]:
    names = [s.name for s in chain.stages]
    unknown = set(rerun) - set(names)
    if unknown:
        raise ConfigError(f"--rerun names unknown stages {sorted(unknown)}; the chain has {names}")
    first_rerun = min((names.index(n) for n in rerun), default=len(names))
    manifest = read_manifest(chain)
    records: dict[str, Any] = manifest.setdefault("stages", {})
    manifest.update(chain=chain.name, chain_file=str(chain.path), out=str(chain.out))
    for index, stage in enumerate(chain.stages):
        tag = f"[{index + 1}/{len(names)}] {stage.name}"
        folder = chain.stage_dir(stage.name)
        text = OmegaConf.to_yaml(stage_config(chain, stage))
        digest = _config_hash(text)
        inputs = {source: records[source]["checkpoint"]["sha256"] for source in sorted(set(stage.inputs.values()))}
        record = records.get(stage.name, {})
        if record and index >= first_rerun:
            _move_aside(chain, stage.name)
            record = {}
        if record and record.get("config_sha256") != digest:
            raise ChainError(f"stage {stage.name!r} ran before with another configuration "
                             f"({folder / STAGE_CONFIG}); rerun it with --rerun {stage.name} (later stages rerun "
                             f"too) or use another --out")
        final = chain.final_checkpoint(stage.name)
        if record.get("status") == "finished":
            if record.get("inputs") == inputs and final.is_file() and sha256(final) == record["checkpoint"]["sha256"]:
                say(f"{tag}: finished before, skipped")
                _announce(chain, launch, stage.name, "skip")
                continue
            say(f"{tag}: its inputs or checkpoint changed since it finished; training it again")
            _move_aside(chain, stage.name)
            record = {}
        last = folder / "checkpoints" / "last.ckpt"
        resume = record.get("status") == "running" and record.get("inputs") == inputs and last.is_file()
        if record and not resume:  # interrupted before its first checkpoint, or its inputs changed
            _move_aside(chain, stage.name)
        folder.mkdir(parents=True, exist_ok=True)
        config_path = folder / STAGE_CONFIG
        tmp = folder / f".{STAGE_CONFIG}.{os.getpid()}.tmp"  # every rank writes the same text
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, config_path)
        say(f"{tag}: " + (f"resuming from {last}" if resume else "training"))
        started = time.time()
        records[stage.name] = {"status": "running", "config": str(config_path), "config_sha256": digest,
                               "inputs": inputs, "started": record.get("started", started) if resume else started}
        _write_json(chain.out / MANIFEST, manifest)
        args = ["fit", "--config", str(config_path)] + (["--ckpt_path", str(last)] if resume else [])
        _announce(chain, launch, stage.name, "fit", args)
        launch_env = {key: os.environ.get(key) for key in _LAUNCH_ENV}
        try:
            code = fit(args)
        finally:
            _finish_wandb()
            if launch is None:  # an external launch keeps its process group for the next stage
                _end_distributed_stage(launch_env)
        if code == 0 and not final.is_file() and resume and last.is_file():
            # resumed from a last.ckpt taken at max_steps: Lightning has nothing left to run
            shutil.copy2(last, final)
        if code != 0 or not final.is_file():
            raise ChainError(f"stage {stage.name!r} failed (exit code {code}); fix the cause and rerun the same "
                             f"command to resume it")
        metrics_path = folder / METRICS_FILE
        metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
        seconds = time.time() - started
        records[stage.name].update(
            status="finished", finished=time.time(), seconds=round(seconds, 1),
            checkpoint={"path": str(final), "sha256": sha256(final)}, metrics=metrics.get("metrics", {}),
            global_step=metrics.get("global_step"),
        )
        export = folder / "restorer.safetensors"
        if export.is_file():
            records[stage.name]["restorer"] = {"path": str(export), "sha256": sha256(export)}
        _write_json(chain.out / MANIFEST, manifest)
        say(f"{tag}: finished in {seconds:.0f} s -> {final}")
    return manifest


def normalized_config(chain: Chain, stage: ChainStage) -> str:
    """A stage's configuration with the chain's own folder, name and group replaced by placeholders."""
    text = OmegaConf.to_yaml(stage_config(chain, stage))
    for value, token in ((str(chain.out), "<OUT>"), (chain.group or "", "<GROUP>"), (chain.name, "<NAME>")):
        if value:
            text = text.replace(value, token)
    return text


def shared_prefix(chain: Chain, donor: Chain) -> int:
    """How many leading stages ``donor`` finished with the same configuration as ``chain`` would run."""
    records = read_manifest(donor)["stages"]
    count = 0
    for mine, theirs in zip(chain.stages, donor.stages):
        record = records.get(theirs.name, {})
        if mine.name != theirs.name or record.get("status") != "finished":
            break
        if normalized_config(chain, mine) != normalized_config(donor, theirs):
            break
        count += 1
    return count


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)  # same bytes, no extra disk (checkpoints are never modified in place)
    except OSError:
        shutil.copy2(src, dst)


def reuse_stages(chain: Chain, donor: Chain, count: int) -> list[str]:
    """Take the first ``count`` finished stages of ``donor`` into ``chain`` (hard links), as if run there.

    Experiment variants that differ only in later stages share their first stages this way. The W&B
    runs of a reused stage stay with the donor's group.
    """
    manifest = read_manifest(chain)
    records = manifest.setdefault("stages", {})
    donor_records = read_manifest(donor)["stages"]
    taken: list[str] = []
    for mine, theirs in list(zip(chain.stages, donor.stages))[:count]:
        if mine.name in records:
            continue  # this chain has its own record (a rerun of the experiment): run_chain decides
        source, target = donor.stage_dir(theirs.name), chain.stage_dir(mine.name)
        if target.exists():
            _move_aside(chain, mine.name)
        shutil.copytree(source, target, copy_function=_link_or_copy, ignore=shutil.ignore_patterns("wandb"))
        text = OmegaConf.to_yaml(stage_config(chain, mine))
        (target / STAGE_CONFIG).unlink()
        (target / STAGE_CONFIG).write_text(text, encoding="utf-8")
        record = json.loads(json.dumps(donor_records[theirs.name]).replace(str(donor.out), str(chain.out)))
        record.update(config=str(target / STAGE_CONFIG), config_sha256=_config_hash(text), reused_from=str(source))
        records[mine.name] = record
        taken.append(mine.name)
    manifest.update(chain=chain.name, chain_file=str(chain.path), out=str(chain.out))
    _write_json(chain.out / MANIFEST, manifest)
    return taken


def stage_inputs(manifest: Mapping[str, Any]) -> dict[str, str]:
    """Stage name -> final checkpoint path of every finished stage in a manifest."""
    return {name: rec["checkpoint"]["path"] for name, rec in manifest.get("stages", {}).items()
            if rec.get("status") == "finished"}
