"""The command examples of README.md and docs/*.md run, on tiny weights and tiny data (issue #21).

Each distinct ``daefr ...`` line that :mod:`docs_examples` collects runs through ``daefr.cli.main`` in a
fresh working folder laid out as the docs assume: face photos in ``photos/``, aligned faces in
``crops/``, ``faces/``, ``gt/`` ..., tiny weights under the docs' file names (``DAEFR_model.ckpt`` and
``HQ_codebook.ckpt`` in the official layouts, 32 px), a Hub cache holding a tiny release (so
``-w daefr`` resolves offline) and the checkout's ``configs/``, ``src/`` and ``plugins/`` linked in. Training commands get fewer steps (:data:`REWRITES`, each with its reason);
commands that read another example's output run that example first (:data:`NEEDS`). Every command
must exit 0 and leave the output it promises: the ``-o`` file or folder, or what :data:`PROMISES`
names, non-empty. The few commands that cannot run here are in :data:`CANNOT_RUN` with the reason.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from docs_examples import REPO, DocCommand, collect_commands

pytestmark = pytest.mark.slow

COMMANDS = collect_commands()
BY_LINE: dict[str, list[DocCommand]] = {}
for _command in COMMANDS:
    BY_LINE.setdefault(_command.line, []).append(_command)

#: Commands that cannot run in the test suite, with the reason. Keep this short: everything else runs.
CANNOT_RUN: dict[str, str] = {
    "daefr fit --config configs/daefr/hq_codebook.yaml --config configs/cluster/ddp_gpu.yaml "
    "--trainer.devices 4 --data.init_args.train /data/ffhq512/shards":
        "4 GPUs (DDP) and the 512 px release architecture",
    "daefr experiment configs/experiments/association_ablation.yaml --seeds 0,1,2":
        "the team's face collection in ../shared/data/faces and 48 demo-size stage trainings (CPU hours)",
    "daefr experiment configs/experiments/association_ablation.yaml":
        "the team's face collection in ../shared/data/faces and 48 demo-size stage trainings (CPU hours)",
    "daefr restore photos/ -o out/ -w DAEFR_model.ckpt --detector retinaface_resnet50 "
    "--detector-arg weights=~/weights/detection_Resnet50_Final.pth":
        "the RetinaFace weights file in ~/weights (not shipped; a random stand-in finds no faces)",
    "daefr weights download all":
        "the network: vgg16 and lpips-vgg are checked against their published sha256",
    "daefr weights download daefr-hq-codebook daefr-lq-codebook daefr-association vgg16 lpips-vgg":
        "the network: vgg16 and lpips-vgg are checked against their published sha256",
    "daefr fit --config configs/daefr/hq_codebook.yaml --config configs/finetune/hq_codebook.yaml "
    "--data.init_args.train my_faces/train --data.init_args.val my_faces/val":
        "the released 512 px HQ codebook (init_from) and a 512 px network",
    "daefr train configs/finetune/domain_chain.yaml":
        "the released 512 px stage weights and four 512 px stage trainings",
    "daefr train configs/finetune/domain_chain.yaml data.init_args.train=my_faces/train "
    "data.init_args.val=my_faces/val":
        "the released 512 px stage weights and four 512 px stage trainings",
    "daefr train configs/finetune/degradation_chain.yaml data.init_args.train=my_faces/train "
    "data.init_args.val=my_faces/val 'data.init_args.degradation={name: gfpgan, jpeg_range: [30, 60]}'":
        "the released 512 px stage weights and 512 px stage trainings",
}
MAX_CANNOT_RUN = 10


@dataclass(frozen=True)
class Rewrite:
    """Replace ``pattern`` (a regex on the command) by ``replacement``, for the stated reason."""

    pattern: str
    replacement: str
    why: str

    def apply(self, line: str) -> str:
        """``line`` with the rewrite applied (unchanged when the pattern does not occur)."""
        return re.sub(self.pattern, self.replacement, line)


_FIT_STEPS = " --trainer.max_steps=5 --trainer.val_check_interval=5"
#: Cheap stand-ins for expensive settings. Only the amount of work changes, never what the command does.
REWRITES: list[Rewrite] = [
    Rewrite(r"^(daefr fit --config (?:configs/tiny|plugins/daefr-example-domain/configs)/\S+)$", r"\1" + _FIT_STEPS,
            "5 steps instead of 40-60 (a checkpoint every 5 steps)"),
    Rewrite(r"^(daefr train configs/(?:tiny|demo)/chain\.yaml)(?! -o runs/try2 --dry-run)(.*?)(?: trainer\.max_steps=\d+)?$",
            r"\1\2 trainer.max_steps=5", "5 steps per stage instead of 40-2400 (checked first with --dry-run)"),
    Rewrite(r"^(daefr experiment configs/experiments/tiny_l2_weight\.yaml)$",
            r"\1 --seeds 0 trainer.max_steps=5", "one seed and 5 steps per stage instead of 2 seeds x 40 steps"),
    Rewrite(r"/data/", "data/", "the cluster page's /data/... paths, inside the working folder"),
    Rewrite(r"--workers 16", "--workers 2", "two CPU cores"),
    Rewrite(r"--size 512", "--size 64", "64 px stand-in faces (the step is the same)"),
    Rewrite(r"--samples 4 --size 256", "--samples 2 --size 64", "a smaller grid"),
]

#: Examples that read what earlier examples wrote: those run first, in the same working folder.
_TESTSET = "daefr make-testset --hq ffhq_val/ -o testset --preset daefr_large --seed 0"
_RESTORE_TESTSET = "daefr restore testset/lq --aligned -o out/ -w DAEFR_model.ckpt"
NEEDS: dict[str, list[str]] = {
    "daefr export -w restorer.safetensors -o restorer.onnx --check": [
        "daefr convert -w DAEFR_model.ckpt -o restorer.safetensors"],
    "daefr evaluate --restored out/restored_faces --gt gt/ -o reports/run1": ["daefr restore crops/ -o out/ --aligned"],
    _RESTORE_TESTSET: [_TESTSET],
    "daefr evaluate --restored out/restored_faces --gt testset/gt --lq testset/lq -o reports/run1": [
        _TESTSET, _RESTORE_TESTSET],
    "daefr evaluate --restored out/restored_faces -o reports/nr --fid-ref ffhq_stats.npz": [_TESTSET, _RESTORE_TESTSET],
    "daefr evaluate -w DAEFR_model.ckpt --lq testset/lq --gt testset/gt -o reports/daefr": [_TESTSET],
    "daefr evaluate --compare reports/run1 reports/daefr -o reports/compare": [
        "daefr evaluate --restored out/restored_faces --gt testset/gt --lq testset/lq -o reports/run1",
        "daefr evaluate -w DAEFR_model.ckpt --lq testset/lq --gt testset/gt -o reports/daefr",
    ],
    "daefr fit --config configs/tiny/association.yaml": [
        "daefr fit --config configs/tiny/hq_codebook.yaml", "daefr fit --config configs/tiny/lq_codebook.yaml"],
    "daefr fit --config configs/tiny/restoration.yaml": [
        "daefr fit --config configs/tiny/hq_codebook.yaml", "daefr fit --config configs/tiny/association.yaml"],
    "daefr fit --config plugins/daefr-example-domain/configs/association.yaml": [
        "daefr fit --config plugins/daefr-example-domain/configs/hq_codebook.yaml",
        "daefr fit --config plugins/daefr-example-domain/configs/lq_codebook.yaml"],
    "daefr fit --config plugins/daefr-example-domain/configs/restoration.yaml": [
        "daefr fit --config plugins/daefr-example-domain/configs/hq_codebook.yaml",
        "daefr fit --config plugins/daefr-example-domain/configs/association.yaml"],
}


def _stdout_has(*words: str) -> Callable[[Path, str], None]:
    def check(_: Path, out: str) -> None:
        for word in words:
            assert word in out, f"{word!r} not in the output:\n{out[-3000:]}"
    return check


def _absent(path: str) -> Callable[[Path, str], None]:
    def check(ws: Path, _: str) -> None:
        assert not (ws / path).exists(), f"{path} was written"
    return check


#: What a command without ``-o`` promises: paths (non-empty afterwards) or a check of (folder, stdout).
PROMISES: dict[str, list[str | Callable[[Path, str], None]]] = {
    "daefr list": [_stdout_has("encoders", "degradations", "face_detectors")],
    "daefr list encoders": [_stdout_has("plain_conv", "daefr_example_domain.encoders:PlainConvEncoder", "vqgan")],
    "daefr info encoders/plain_conv": [_stdout_has("target:  daefr_example_domain.encoders:PlainConvEncoder")],
    "daefr weights list": [_stdout_has("daefr-hq-codebook", "vgg16")],
    "daefr weights download daefr": [_stdout_has("DAEFR_model.ckpt")],
    "daefr fit --config configs/tiny/hq_codebook.yaml": ["runs/tiny/hq_codebook/checkpoints/last.ckpt"],
    "daefr fit --config configs/tiny/lq_codebook.yaml": ["runs/tiny/lq_codebook/checkpoints/last.ckpt"],
    "daefr fit --config configs/tiny/association.yaml": ["runs/tiny/association/checkpoints/last.ckpt"],
    "daefr fit --config configs/tiny/restoration.yaml": [
        "runs/tiny/restoration/checkpoints/last.ckpt", "runs/tiny/restoration/restorer.safetensors"],
    "daefr train configs/tiny/chain.yaml": [
        "runs/tiny/chain.json", "runs/tiny/restoration/restorer.safetensors"],
    "daefr train configs/tiny/chain.yaml association.model.init_args.learning_rate=1e-4": [
        "runs/tiny/chain.json", "runs/tiny/restoration/restorer.safetensors"],
    "daefr train configs/demo/chain.yaml trainer.max_steps=50": [
        "runs/demo/chain.json", "runs/demo/restoration/restorer.safetensors"],
    "daefr train configs/tiny/chain.yaml -o runs/try2 --dry-run": [
        _stdout_has("hq_codebook", "lq_codebook", "association", "restoration"), _absent("runs/try2/hq_codebook")],
    "daefr experiment configs/experiments/tiny_l2_weight.yaml": ["runs/experiments/tiny_l2_weight"],
    **{f"daefr fit --config plugins/daefr-example-domain/configs/{stage}.yaml":
       [f"runs/text/{stage}/checkpoints/last.ckpt"]
       for stage in ("hq_codebook", "lq_codebook", "association", "restoration")},
    "daefr evaluate -w DAEFR_model.ckpt --lq testset/lq --gt testset/gt -o reports/daefr": ["reports/daefr/restored"],
}


def _rewritten(line: str) -> str:
    for rewrite in REWRITES:
        line = rewrite.apply(line)
    return line


def _promised(line: str) -> list[str | Callable[[Path, str], None]]:
    promised: list[str | Callable[[Path, str], None]] = list(PROMISES.get(line, []))
    words = shlex.split(_rewritten(line))
    for flag in ("-o", "--output"):
        if flag in words and "--dry-run" not in words:
            promised.append(words[words.index(flag) + 1])
    return promised


def _non_empty(path: Path) -> bool:
    if path.is_file():
        return path.stat().st_size > 0
    return path.is_dir() and any(p.is_file() and p.stat().st_size > 0 for p in path.rglob("*"))


# ---------------------------------------------------------------------------------------------------------------
# the working folder


def _faces(n: int) -> list[Path]:
    return sorted((REPO / "src/daefr/assets/demo_faces/val").glob("*.png"))[:n]


def _copy_faces(folder: Path, n: int = 4) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for face in _faces(n):
        shutil.copy(face, folder / face.name)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The files every example may read, written once (tiny weights, faces, photos)."""
    import cv2

    from daefr.testing.daefr_tiny import random_official_state_dict
    from daefr.testing.hub_cache import checkpoint_bytes, tiny_patchgan_state, tiny_vqgan_state

    ws = tmp_path_factory.mktemp("docs_examples") / "template"
    ws.mkdir()
    for name in ("configs", "src", "plugins"):
        (ws / name).symlink_to(REPO / name)
    whole = sorted((REPO / "src/daefr/assets/demo_faces/whole").glob("*.jpg"))
    (ws / "photos").mkdir()
    for photo in whole:
        shutil.copy(photo, ws / "photos" / photo.name)
    (ws / "more").mkdir()
    shutil.copy(whole[0], ws / "more" / "first.jpg")
    photo = cv2.imread(str(whole[-1]))
    assert photo is not None, whole[-1]
    cv2.imwrite(str(ws / "single.png"), photo)
    for folder in ("crops", "faces", "gt", "ffhq_val", "my_faces/train", "my_faces/val", "data/ffhq/images512x512"):
        _copy_faces(ws / folder)
    shutil.copy(_faces(1)[0], ws / "face.png")
    (ws / "DAEFR_model.ckpt").write_bytes(checkpoint_bytes(random_official_state_dict("smoke", seed=3)))
    codebook = {f"vqvae.{k}": v for k, v in tiny_vqgan_state(1).items()}  # + the PatchGAN, as the released file
    codebook |= {f"loss.discriminator.{k}": v for k, v in tiny_patchgan_state(6).items()}
    (ws / "HQ_codebook.ckpt").write_bytes(checkpoint_bytes(codebook))
    return ws


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private, offline Hub cache holding a tiny release (``-w daefr`` is a 32 px ``smoke`` model)."""
    from daefr.testing.hub_cache import isolated_hub_env, write_tiny_daefr_release

    env = isolated_hub_env(monkeypatch, tmp_path / "home")
    write_tiny_daefr_release(env["hub"], final_arch="smoke")
    return env["hub"]


_TEMPLATE_NAMES: set[str] = set()
_DONE: dict[str, tuple[Path, list[str]]] = {}  # command -> the folder it ran in, top-level names it added


def _run(line: str, ws: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> str:
    from daefr.cli import main

    command = _rewritten(line)
    monkeypatch.chdir(ws)
    capfd.readouterr()
    words = shlex.split(command)
    steps = [w.split("=", 1)[1] for w in words if w.startswith("trainer.max_steps=")]
    if words[1] == "train" and steps and "--dry-run" not in words:  # a chain's own step counts must not win
        assert main([*words[1:], "--dry-run"]) == 0
        shown = re.findall(r"^  max_steps: (\d+)$", capfd.readouterr().out, re.M)
        assert shown and set(shown) == set(steps), \
            f"`{command}`: the stages would train {shown} steps, not the command line's trainer.max_steps={steps[0]}"
    code = main(words[1:])
    out, err = capfd.readouterr()
    text = out + err
    assert code == 0, f"`{command}` (docs: `{line}`) exited {code}:\n{text[-4000:]}"
    for promise in _promised(line):
        if isinstance(promise, str):
            path = ws / os.path.expanduser(promise)
            assert _non_empty(path), f"`{command}` did not write {promise} (or left it empty):\n{text[-3000:]}"
        else:
            promise(ws, text)
    _DONE[line] = (ws, sorted(p.name for p in ws.iterdir() if p.name not in _TEMPLATE_NAMES))
    return text


def _prepare(line: str, root: Path, template: Path, capfd: pytest.CaptureFixture[str],
             monkeypatch: pytest.MonkeyPatch) -> Path:
    ws = root / f"ws{len(list(root.iterdir()))}"
    shutil.copytree(template, ws, symlinks=True)
    _TEMPLATE_NAMES.update(p.name for p in template.iterdir())
    for need in NEEDS.get(line, []):
        if need not in _DONE:
            _run(need, _prepare(need, root, template, capfd, monkeypatch), capfd, monkeypatch)
        folder, added = _DONE[need]
        for name in added:
            if (folder / name).is_dir():
                shutil.copytree(folder / name, ws / name, symlinks=True, dirs_exist_ok=True)
            else:
                shutil.copy(folder / name, ws / name)
    return ws


# ---------------------------------------------------------------------------------------------------------------
# the tests


def test_the_list_of_commands_that_cannot_run_is_short_and_current() -> None:
    assert len(CANNOT_RUN) <= MAX_CANNOT_RUN, "most examples must run; fix the example or the test's set-up"
    runnable = [line for line in BY_LINE if line not in CANNOT_RUN]
    assert len(runnable) >= 3 * len(CANNOT_RUN), (len(runnable), len(CANNOT_RUN))
    stale = [line for line in CANNOT_RUN if line not in BY_LINE]
    assert not stale, f"no longer in the docs (drop from CANNOT_RUN): {stale}"
    for table in (PROMISES, NEEDS, KNOWN_BUGS):
        stale = [line for line in table if line not in BY_LINE]
        assert not stale, f"no longer in the docs: {stale}"
    needed = [need for needs in NEEDS.values() for need in needs if need not in BY_LINE or need in CANNOT_RUN]
    assert not needed, f"prerequisites must be runnable docs examples: {needed}"
    unused = [r.pattern for r in REWRITES if not any(r.apply(line) != line for line in BY_LINE)]
    assert not unused, f"rewrites that match no example: {unused}"


RUNNABLE = [line for line in BY_LINE if line not in CANNOT_RUN]
#: Examples that show a bug not fixed yet (strict: they must fail until it is fixed), with the bug.
KNOWN_BUGS: dict[str, str] = {}


@pytest.mark.parametrize("line", [pytest.param(line, id=BY_LINE[line][0].id, marks=[pytest.mark.xfail(
    reason=KNOWN_BUGS[line], strict=True)] if line in KNOWN_BUGS else []) for line in RUNNABLE])
def test_docs_example_runs(line: str, template: Path, hub: Path, tmp_path: Path,
                           capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "runs"
    root.mkdir()
    ws = _prepare(line, root, template, capfd, monkeypatch)
    _run(line, ws, capfd, monkeypatch)
