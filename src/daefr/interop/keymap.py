"""Official-key -> daefr-key mapping that accounts for every key (never skips one silently).

A :class:`KeyMap` is an ordered list of :class:`KeyRule` prefix renames. Applying it to an official
state dict gives a :class:`MappingReport` that lists, separately:

* ``mapped``: official key -> our key, checked against the target's shape;
* ``name_only``: keys mapped by name without a shape check (components owned elsewhere, e.g. LPIPS);
* ``ignored``: keys a rule explicitly drops (with its reason);
* ``unmatched``: official keys no rule covers (unexpected keys);
* ``missing``: keys the target needs that no official key provides;
* ``shape_mismatches``: mapped keys whose shapes differ;
* ``not_loaded``: mapped keys whose component was not given to :func:`load_official`.

Targets are component-namespaced (``vqgan.encoder.conv_in.weight``, ``discriminator.main.0.weight``);
:meth:`KeyMap.retarget` renames the namespaces to fit another module tree. The codebook-stage and
association-stage maps are defined here; the final DAEFR model map builds on the same classes.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor, nn

from daefr.errors import CheckpointError

__all__ = [
    "ASSOCIATION_STAGE_KEYMAP",
    "CODEBOOK_STAGE_KEYMAP",
    "KeyMap",
    "KeyRule",
    "MappingReport",
    "load_official",
    "shapes_of",
]

Shape = tuple[int, ...]


@dataclass(frozen=True)
class KeyRule:
    """Rename official keys starting with ``source`` to ``target`` + rest.

    A ``source`` without a trailing dot matches that exact key only. ``target=None`` drops the keys
    (reported as ignored, with ``note``). ``shape_checked=False`` maps by name only (reported).
    """

    source: str
    target: str | None
    shape_checked: bool = True
    note: str = ""

    def matches(self, key: str) -> bool:
        """Whether this rule covers ``key``."""
        return key.startswith(self.source) if self.source.endswith(".") else key == self.source

    def apply(self, key: str) -> str | None:
        """The renamed key (``None`` when the rule drops it)."""
        return None if self.target is None else self.target + key[len(self.source):]


@dataclass
class MappingReport:
    """Outcome of mapping an official state dict onto our keys (see module docstring)."""

    keymap: str
    mapped: dict[str, str] = field(default_factory=dict)
    name_only: dict[str, str] = field(default_factory=dict)
    ignored: dict[str, str] = field(default_factory=dict)
    unmatched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    shape_mismatches: dict[str, tuple[Shape, Shape]] = field(default_factory=dict)
    not_loaded: dict[str, str] = field(default_factory=dict)
    conflicts: dict[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True when nothing is unmatched, missing, of the wrong shape or mapped twice."""
        return not (self.unmatched or self.missing or self.shape_mismatches or self.conflicts)

    def summary(self) -> str:
        """One line per non-empty category, with up to five example keys each."""

        def sample(keys: Iterable[str]) -> str:
            keys = list(keys)
            more = f", ... (+{len(keys) - 5})" if len(keys) > 5 else ""
            return ", ".join(keys[:5]) + more

        lines = [f"{self.keymap}: {len(self.mapped)} keys mapped"]
        if self.name_only:
            lines.append(f"  mapped by name only (not shape-checked): {len(self.name_only)}: {sample(self.name_only)}")
        if self.ignored:
            reasons = sorted(set(self.ignored.values()))
            lines.append(f"  ignored by rule: {len(self.ignored)} ({'; '.join(reasons)})")
        if self.not_loaded:
            lines.append(f"  not loaded (no module given for them): {len(self.not_loaded)}: {sample(self.not_loaded)}")
        if self.unmatched:
            lines.append(f"  unexpected official keys (no rule): {len(self.unmatched)}: {sample(self.unmatched)}")
        if self.missing:
            lines.append(f"  missing (needed, not in the checkpoint): {len(self.missing)}: {sample(self.missing)}")
        if self.shape_mismatches:
            items = [f"{k} {list(a)} vs ours {list(b)}" for k, (a, b) in self.shape_mismatches.items()]
            lines.append(f"  shape mismatches: {len(items)}: {sample(items)}")
        if self.conflicts:
            items = [f"{k} <- {' + '.join(v)}" for k, v in self.conflicts.items()]
            lines.append(f"  several official keys map to one key: {len(items)}: {sample(items)}")
        return "\n".join(lines)

    def raise_if_incomplete(self, context: str = "checkpoint") -> None:
        """Raise :class:`CheckpointError` with the summary unless :attr:`ok`."""
        if not self.ok:
            raise CheckpointError(
                f"{context} does not match the expected layout (wrong checkpoint type or architecture?)\n"
                + self.summary()
            )


class KeyMap:
    """Ordered prefix rules; the longest matching ``source`` wins."""

    def __init__(self, name: str, rules: Sequence[KeyRule | tuple[str, str | None]]) -> None:
        self.name = name
        self.rules = tuple(r if isinstance(r, KeyRule) else KeyRule(r[0], r[1]) for r in rules)

    def __repr__(self) -> str:
        return f"KeyMap({self.name!r}, {len(self.rules)} rules)"

    def rule_for(self, key: str) -> KeyRule | None:
        """The rule that covers ``key`` (longest source prefix), or ``None``."""
        best: KeyRule | None = None
        for rule in self.rules:
            if rule.matches(key) and (best is None or len(rule.source) > len(best.source)):
                best = rule
        return best

    def map_key(self, key: str) -> str | None:
        """Our key for an official key; ``None`` when dropped or not covered."""
        rule = self.rule_for(key)
        return None if rule is None else rule.apply(key)

    def retarget(self, replacements: Mapping[str, str], name: str | None = None) -> KeyMap:
        """A copy whose target prefixes are renamed, e.g. ``{"vqgan.": "autoencoder."}``."""
        rules = []
        for rule in self.rules:
            target = rule.target
            if target is not None:
                for old, new in replacements.items():
                    if target.startswith(old):
                        target = new + target[len(old):]
                        break
            rules.append(replace(rule, target=target))
        return KeyMap(name or self.name, rules)

    def report(self, source: Mapping[str, Shape], target: Mapping[str, Shape] | None = None) -> MappingReport:
        """Check official ``{key: shape}`` against our ``{key: shape}`` (``None``: only rename and classify)."""
        rep = MappingReport(self.name)
        provided: dict[str, str] = {}
        for key, shape in source.items():
            rule = self.rule_for(key)
            if rule is None:
                rep.unmatched.append(key)
                continue
            ours = rule.apply(key)
            if ours is None:
                rep.ignored[key] = rule.note or f"dropped by rule {rule.source!r}"
                continue
            if ours in provided:
                rep.conflicts.setdefault(ours, [provided[ours]]).append(key)
            provided[ours] = key
            if not rule.shape_checked:
                rep.name_only[key] = ours
                continue
            if target is not None and ours not in target:
                rep.unmatched.append(key)
                continue
            rep.mapped[key] = ours
            if target is not None and tuple(target[ours]) != tuple(shape):
                rep.shape_mismatches[key] = (tuple(shape), tuple(target[ours]))
        if target is not None:
            rep.missing = [k for k in target if k not in provided]
        return rep

    def convert(self, state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], MappingReport]:
        """Rename an official state dict (mapped and name-only keys), with the report (no target check)."""
        rep = self.report(shapes_of(state_dict))
        out = {ours: state_dict[key] for key, ours in {**rep.mapped, **rep.name_only}.items()}
        return out, rep


def shapes_of(tensors: Mapping[str, Tensor] | nn.Module) -> dict[str, Shape]:
    """``{key: shape}`` of a state dict or of a module's state dict (works on the meta device)."""
    items = tensors.state_dict() if isinstance(tensors, nn.Module) else tensors
    return {k: tuple(v.shape) for k, v in items.items()}


def _target_shapes(modules: Mapping[str, nn.Module]) -> dict[str, Shape]:
    out: dict[str, Shape] = {}
    for prefix, module in modules.items():
        for key, shape in shapes_of(module).items():
            out[f"{prefix}.{key}"] = shape
    return out


def load_official(
    keymap: KeyMap,
    state_dict: Mapping[str, Tensor],
    modules: Mapping[str, nn.Module],
    *,
    strict: bool = True,
    context: str = "checkpoint",
) -> MappingReport:
    """Load an official state dict into ``modules`` (``{namespace: module}``, e.g. ``{"vqgan": model}``).

    Keys whose target namespace is not in ``modules`` are reported under ``not_loaded``. With
    ``strict`` any unmatched, missing or mis-shaped key raises :class:`CheckpointError` before anything
    is copied; without it, the mapped and well-shaped keys are loaded and the report says the rest.
    """
    target = _target_shapes(modules)
    rep = keymap.report(shapes_of(state_dict), target)
    namespaces = tuple(f"{p}." for p in modules)
    for key, ours in list(rep.name_only.items()):
        if not ours.startswith(namespaces):
            rep.not_loaded[key] = ours
    # keys of components that were not given are not "unexpected": report them under not_loaded
    still_unmatched = []
    for key in rep.unmatched:
        renamed = keymap.map_key(key)
        if renamed is not None and not renamed.startswith(namespaces):
            rep.not_loaded[key] = renamed
        else:
            still_unmatched.append(key)
    rep.unmatched = still_unmatched
    if strict:
        rep.raise_if_incomplete(context)
    for prefix, module in modules.items():
        ns = f"{prefix}."
        part = {
            ours[len(ns):]: state_dict[key]
            for key, ours in {**rep.mapped, **rep.name_only}.items()
            if ours.startswith(ns) and key not in rep.shape_mismatches
        }
        try:
            with torch.no_grad():
                module.load_state_dict(part, strict=strict)
        except RuntimeError as exc:  # only name-only keys can get here (the rest was checked above)
            raise CheckpointError(f"{context}: cannot load {prefix!r}: {str(exc).splitlines()[0]}") from None
    return rep


_LPIPS_NOTE = "LPIPS weights (daefr.losses.lpips); mapped by name only, not shape-checked here"

#: HQ_codebook.ckpt / LQ_codebook.ckpt (official ``vqgan_origin.DAEFRModel``).
CODEBOOK_STAGE_KEYMAP = KeyMap(
    "codebook stage (HQ_codebook / LQ_codebook)",
    [
        KeyRule("vqvae.", "vqgan."),
        KeyRule("loss.discriminator.", "discriminator."),
        KeyRule("loss.perceptual_loss.", "lpips.", shape_checked=False, note=_LPIPS_NOTE),
    ],
)

#: Association_stage.ckpt (official ``association_stage.DAEFRModel``): HQ branch ``vqvae``, LQ branch ``vqvae_LQ``.
ASSOCIATION_STAGE_KEYMAP = KeyMap(
    "association stage",
    [
        KeyRule("vqvae.", "hq."),
        KeyRule("vqvae_LQ.", "lq."),
        KeyRule("loss.discriminator.", "hq_discriminator."),
        KeyRule("loss_LQ.discriminator.", "lq_discriminator."),
        KeyRule("loss.perceptual_loss.", "hq_lpips.", shape_checked=False, note=_LPIPS_NOTE),
        KeyRule("loss_LQ.perceptual_loss.", "lq_lpips.", shape_checked=False, note=_LPIPS_NOTE),
        KeyRule("logit_scale", "association.logit_scale"),
    ],
)
