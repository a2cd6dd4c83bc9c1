"""Experiments: several variants of a chain, trained over several seeds and evaluated on one held-out set.

An experiment file (``configs/experiments/*.yaml``)::

    name: codebook_choice
    chain: ../tiny/chain.yaml            # the base chain (relative to this file)
    out: runs/experiments/codebook_choice
    seeds: [0, 1, 2]
    overrides: {trainer.max_steps: 100}  # for every variant (KEY or STAGE.KEY, as `daefr train`)
    variants:
      - {name: vq}
      - name: ema
        overrides: {model.init_args.codebook.name: ema}
      - {name: other_chain, chain: ../tiny/other_chain.yaml}
    evaluation:
      hq: ../../src/daefr/assets/demo_faces/val   # held-out HQ faces (a source never trained on)
      size: 32
      metrics: [psnr, ssim, ids]
    wandb: {project: daefr-experiments}    # optional: every stage and evaluation run logs to W&B

Every (variant, seed) is an ordinary chain in ``<out>/<variant>/seed<k>/`` (so a cluster can run them
in parallel with ``daefr train``); variants run one after another here. The held-out faces are degraded
once with a fixed seed (blur, downscale, noise, JPEG; see :class:`HeldOut`), restored by each variant's
exported restorer, and scored. ``<out>/report.md`` holds the table (mean and spread over seeds), plots
of each metric per variant and of the training curves, and ``per_image.csv`` the per-image rows.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from daefr.chain import ChainError, load_chain, parse_overrides, reuse_stages, run_chain, shared_prefix
from daefr.errors import ConfigError
from daefr.heldout import HeldOut, build_heldout, find_images, restore_folder, score

WANDB_LOGGER = "lightning.pytorch.loggers.WandbLogger"


@dataclass(frozen=True)
class Variant:
    """One variant: a chain file and the overrides that make it differ from the others."""

    name: str
    chain: Path
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Experiment:
    """A parsed experiment file."""

    name: str
    path: Path
    out: Path
    seeds: tuple[int, ...]
    variants: tuple[Variant, ...]
    heldout: HeldOut
    overrides: dict[str, Any] = field(default_factory=dict)
    wandb: dict[str, Any] | None = None


def _pair(value: Any, key: str, path: Path, cast: Callable[[Any], Any]) -> tuple[Any, Any]:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ConfigError(f"{path}: evaluation.{key} must be a [low, high] pair, got {value!r}")
    return cast(value[0]), cast(value[1])


def _box(value: Any, path: Path) -> tuple[int, int, int, int] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or len(value) != 4 or not value[0] < value[2] or not value[1] < value[3]:
        raise ConfigError(f"{path}: evaluation.crop must be [left, top, right, bottom] with left < right, "
                          f"top < bottom; got {value!r}")
    return int(value[0]), int(value[1]), int(value[2]), int(value[3])


def load_experiment(path: str | Path, out: str | Path | None = None, seeds: Sequence[int] | None = None,
                    overrides: Sequence[str] = ()) -> Experiment:
    """Read an experiment file; ``overrides`` (``KEY=VALUE``) apply to every variant."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"experiment file {path} not found")
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: an experiment file must be a mapping")
    unknown = set(raw) - {"name", "chain", "out", "seeds", "overrides", "variants", "evaluation", "wandb"}
    if unknown:
        raise ConfigError(f"{path}: unknown experiment keys {sorted(unknown)}")
    base = path.parent / str(raw.get("chain", ""))
    variants: list[Variant] = []
    for entry in raw.get("variants") or []:
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"{path}: every variant needs a name")
        name = str(entry["name"])
        if name in {v.name for v in variants} or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"{path}: variant name {name!r} is repeated or not letters/digits/_/-")
        chain = path.parent / str(entry["chain"]) if "chain" in entry else base
        if not chain.is_file():
            raise ConfigError(f"{path}: variant {name!r}: chain file {chain} not found")
        variants.append(Variant(name, chain.resolve(), dict(entry.get("overrides") or {})))
    if len(variants) < 1:
        raise ConfigError(f"{path}: an experiment needs at least one variant")
    ev = raw.get("evaluation") or {}
    if "hq" not in ev:
        raise ConfigError(f"{path}: evaluation.hq (a folder of held-out HQ faces) is required")
    heldout = HeldOut(
        hq=(path.parent / str(ev["hq"])).resolve(), size=int(ev.get("size", 32)), limit=ev.get("limit"),
        metrics=tuple(ev.get("metrics", HeldOut.metrics)), seed=int(ev.get("seed", 0)), scale=int(ev.get("scale", 4)),
        crop=_box(ev.get("crop"), path),
        sigma=_pair(ev.get("sigma", HeldOut.sigma), "sigma", path, float),
        noise=_pair(ev.get("noise", HeldOut.noise), "noise", path, float),
        jpeg=_pair(ev.get("jpeg", HeldOut.jpeg), "jpeg", path, int),
    )
    if heldout.hq is None or not heldout.hq.is_dir():
        raise ConfigError(f"{path}: evaluation.hq folder {heldout.hq} not found")
    chosen = tuple(int(s) for s in (seeds if seeds is not None else raw.get("seeds") or [0]))
    shared = {**dict(raw.get("overrides") or {}), **parse_overrides(overrides)}
    out_dir = Path(out) if out is not None else Path(str(raw.get("out") or Path("runs") / "experiments" / path.stem))
    return Experiment(str(raw.get("name") or path.stem), path.resolve(), out_dir, chosen, tuple(variants), heldout,
                      shared, raw.get("wandb"))


# ---------------------------------------------------------------------------------------------- runs
def variant_chain(exp: Experiment, variant: Variant, seed: int) -> Any:
    """The chain of one (variant, seed): its own folder, W&B group and tags."""
    items = [f"{k}={json.dumps(v)}" for k, v in {**exp.overrides, **variant.overrides}.items()]
    if exp.wandb is not None:
        logger = {"class_path": WANDB_LOGGER, "init_args": {"project": exp.wandb.get("project", "daefr-experiments"),
                                                           "offline": bool(exp.wandb.get("offline", False))}}
        items.append(f"trainer.logger={json.dumps(logger)}")
    chain = load_chain(variant.chain, out=exp.out / variant.name / f"seed{seed}", overrides=items)
    return replace(chain, name=f"{exp.name}-{variant.name}-seed{seed}", seed=seed,
                   group=f"{exp.name}/{variant.name}", tags=(exp.name,))


def _restorer(manifest: dict[str, Any]) -> Path:
    for record in reversed(list(manifest["stages"].values())):
        if "restorer" in record:
            return Path(record["restorer"]["path"])
    raise ChainError("the chain's last stages exported no restorer (model.init_args.export_path); nothing to evaluate")


def _curve(stage_dir: Path, key: str) -> list[tuple[int, float]]:
    """(step, value) of ``key`` from a stage's CSV log (empty when the stage logged elsewhere)."""
    points: list[tuple[int, float]] = []
    for file in sorted(stage_dir.glob("**/metrics.csv")):
        with file.open(newline="") as handle:
            points += [(int(r["step"]), float(r[key])) for r in csv.DictReader(handle) if r.get(key)]
    return points


def _log_evaluation(exp: Experiment, chain: Any, dirs: dict[str, Path], restored: Path,
                    rows: list[dict[str, Any]], summary: dict[str, float], usage: dict[str, float]) -> None:
    import wandb

    assert exp.wandb is not None
    run = wandb.init(project=exp.wandb.get("project", "daefr-experiments"), group=chain.group, job_type="evaluation",
                     name=f"{chain.name}/evaluation", tags=list(chain.tags), dir=str(chain.out),
                     mode="offline" if exp.wandb.get("offline") else None, reinit="finish_previous",
                     config={"experiment": exp.name, "seed": chain.seed, "heldout": str(exp.heldout.hq)})
    metrics = list(exp.heldout.metrics)
    table = wandb.Table(columns=["image", "lq", "restored", "gt", *metrics])
    for row in rows:
        name = Path(str(row["restored"])).name
        table.add_data(name, wandb.Image(str(dirs["lq"] / name)), wandb.Image(str(restored / name)),
                       wandb.Image(str(dirs["gt"] / name)), *[row.get(m) for m in metrics])
    run.log({"heldout/samples": table, **{f"heldout/{k}": v for k, v in summary.items()}, **usage})
    run.finish()


def run_experiment(exp: Experiment, fit: Callable[[list[str]], int] | None = None,
                   say: Callable[[str], None] = print) -> dict[str, Any]:
    """Train and evaluate every (variant, seed); write the report; return the summary."""
    h = exp.heldout
    assert h.hq is not None
    dirs = build_heldout(find_images(h.hq)[: h.limit], h, exp.out / "heldout")
    results: dict[str, dict[int, dict[str, float]]] = {}
    per_image: list[dict[str, Any]] = []
    curves: dict[str, list[tuple[int, float]]] = {}
    done: dict[int, list[Any]] = {seed: [] for seed in exp.seeds}  # chains run so far, per seed
    for variant in exp.variants:
        results[variant.name] = {}
        for seed in exp.seeds:
            chain = variant_chain(exp, variant, seed)
            say(f"== {variant.name}, seed {seed} ({chain.out})")
            donors = sorted(done[seed], key=lambda d: shared_prefix(chain, d), reverse=True)
            if donors and (count := shared_prefix(chain, donors[0])):
                taken = reuse_stages(chain, donors[0], count)
                if taken:
                    say(f"   same as {donors[0].out}: reusing {', '.join(taken)}")
            done[seed].append(chain)
            manifest = run_chain(chain, fit=fit, say=say)
            restored = chain.out / "heldout_restored"
            restore_folder(_restorer(manifest), dirs["lq"], restored, h.size)
            rows, summary = score(restored, dirs["gt"], h.metrics)
            last = list(manifest["stages"].values())[-1]
            usage = {k: v for k, v in last.get("metrics", {}).items() if "codes_in_use" in k or "code_accuracy" in k}
            summary.update({k.replace("val/", "val_"): v for k, v in usage.items()})
            results[variant.name][seed] = summary
            per_image += [{"variant": variant.name, "seed": seed, "image": Path(str(r["restored"])).name,
                           **{m: r.get(m) for m in h.metrics}} for r in rows]
            curve_key = "train/ce_loss"
            curves[f"{variant.name}/seed{seed}"] = _curve(chain.stage_dir(chain.stages[-1].name), curve_key)
            (chain.out / "heldout.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=2,
                                                               default=str) + "\n")
            if exp.wandb is not None:
                _log_evaluation(exp, chain, dirs, restored, rows, summary, usage)
    _, bicubic = score(dirs["bicubic"], dirs["gt"], h.metrics)
    report = write_report(exp, results, bicubic, per_image, curves)
    say(f"experiment {exp.name!r}: report {report}")
    return {"results": results, "bicubic": bicubic, "report": str(report)}


# -------------------------------------------------------------------------------------------- report
def aggregate(per_seed: dict[int, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Metric -> {mean, std (sample, 0 for one seed), min, max, n} over seeds."""
    out: dict[str, dict[str, float]] = {}
    for metric in sorted({m for s in per_seed.values() for m in s}):
        values = [s[metric] for s in per_seed.values() if metric in s and math.isfinite(s[metric])]
        if values:
            out[metric] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                           "min": min(values), "max": max(values), "n": float(len(values))}
    return out


def _plots(folder: Path, exp: Experiment, table: dict[str, dict[str, dict[str, float]]],
           bicubic: dict[str, float], curves: dict[str, list[tuple[int, float]]]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    names = list(table)
    metrics = [m for m in exp.heldout.metrics if any(m in table[v] for v in names)]
    if metrics:
        fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
        for ax, metric in zip(axes[0], metrics):
            means = [table[v].get(metric, {}).get("mean", math.nan) for v in names]
            stds = [table[v].get(metric, {}).get("std", 0.0) for v in names]
            ax.bar(range(len(names)), means, yerr=stds, capsize=4, color="#4c72b0")
            if metric in bicubic:
                ax.axhline(bicubic[metric], color="#c44e52", linestyle="--", label="bicubic")
                ax.legend(fontsize=7)
            ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
            ax.set_title(metric.upper(), fontsize=9)
            finite = [m for m in means if math.isfinite(m)] + ([bicubic[metric]] if metric in bicubic else [])
            if finite:
                spread = max(finite) - min(finite) or abs(max(finite)) * 0.05 or 1.0
                ax.set_ylim(min(finite) - spread, max(finite) + spread)
        fig.tight_layout()
        fig.savefig(folder / "metrics.svg")
        plt.close(fig)
        written.append("plots/metrics.svg")
    if any(curves.values()):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for label, points in curves.items():
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], label=label, linewidth=1)
        ax.set_xlabel("step")
        ax.set_ylabel("train/ce_loss (last stage)")
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(folder / "curves.svg")
        plt.close(fig)
        written.append("plots/curves.svg")
    return written


def write_report(exp: Experiment, results: dict[str, dict[int, dict[str, float]]], bicubic: dict[str, float],
                 per_image: list[dict[str, Any]], curves: dict[str, list[tuple[int, float]]]) -> Path:
    """``report.md``, ``summary.json``, ``per_image.csv`` and ``plots/`` in the experiment folder."""
    from daefr.metrics.suite import HIGHER_IS_BETTER

    exp.out.mkdir(parents=True, exist_ok=True)
    table = {variant: aggregate(per_seed) for variant, per_seed in results.items()}
    metrics = sorted({m for t in table.values() for m in t}, key=lambda m: (m not in exp.heldout.metrics, m))
    plots = _plots(exp.out / "plots", exp, table, bicubic, curves)
    lines = [f"# Experiment {exp.name}", "",
             f"Seeds {list(exp.seeds)}; held-out faces `{exp.heldout.hq}` ({exp.heldout.size} px, degraded once with "
             f"seed {exp.heldout.seed}: blur sigma {list(exp.heldout.sigma)}, {exp.heldout.scale}x downscale, noise "
             f"{list(exp.heldout.noise)}, JPEG {list(exp.heldout.jpeg)}). Values: mean ± sample std over seeds "
             f"[min, max].", "",
             "| variant | " + " | ".join(f"{m} ({'higher' if HIGHER_IS_BETTER.get(m, True) else 'lower'} is better)"
                                        if m in exp.heldout.metrics else m for m in metrics) + " |",
             "| --- |" + " ---: |" * len(metrics)]
    for variant, stats in table.items():
        cells = [f"{s['mean']:.4g} ± {s['std']:.2g} [{s['min']:.4g}, {s['max']:.4g}]" if (s := stats.get(m)) else "-"
                 for m in metrics]
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    lines.append("| bicubic | " + " | ".join(f"{bicubic[m]:.4g}" if m in bicubic else "-" for m in metrics) + " |")
    lines += [""] + [f"![{p}]({p})" for p in plots] + ["", "Per-image values: `per_image.csv`."]
    (exp.out / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with (exp.out / "per_image.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["variant", "seed", "image", *exp.heldout.metrics])
        writer.writeheader()
        writer.writerows(per_image)
    summary = {"experiment": exp.name, "seeds": list(exp.seeds), "table": table, "per_seed": results,
               "bicubic": bicubic}
    (exp.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return exp.out / "report.md"
