"""One-off: select and resize the embedded demo faces from ../shared/data/faces (kept for provenance).

train/   UTKFace (every other file of the sorted 1000) + LFW people 41.. (face crop [50:200]), 64 px PNG
val/     held-out faces of the same two sources: the first 40 odd-position UTKFace files and the first
         40 LFW people (never in train/; LFW has one photo per person here, so no identity is shared)
unseen/  a source never trained on: the 38 FFHQ / CelebA-HQ faces of hq512/ (FFHQ alignment), 64 px PNG
"""
import shutil
import sys
from pathlib import Path

from PIL import Image

N_UTK = 500   # training faces from UTKFace
N_LFW = 760   # training faces from LFW
N_VAL = 40    # held-out faces per training source
LFW_CROP = (50, 50, 200, 200)  # deep-funneled LFW: the face is in the centre 150 px

src = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
dst = Path("src/daefr/assets/demo_faces")


def save(path: Path, target: Path, crop: tuple[int, int, int, int] | None = None, size: int = 64) -> None:
    """Write ``path`` (optionally cropped) resized to ``size`` px as an optimised PNG."""
    image = Image.open(path).convert("RGB")
    if crop is not None:
        image = image.crop(crop)
    image.resize((size, size), Image.BICUBIC).save(target, optimize=True)


for sub in ("train", "val", "unseen"):
    shutil.rmtree(dst / sub, ignore_errors=True)
    (dst / sub).mkdir(parents=True)
utk = sorted((src / "train_utkface").iterdir())
lfw = sorted((src / "val_lfw").iterdir())
for p in utk[::2][:N_UTK]:
    save(p, dst / "train" / (p.name.split(".jpg")[0] + ".png"))
for p in utk[1::2][:N_VAL]:
    save(p, dst / "val" / (p.name.split(".jpg")[0] + ".png"))
for p in lfw[N_VAL:N_VAL + N_LFW]:
    save(p, dst / "train" / f"lfw_{p.stem}.png", LFW_CROP)
for p in lfw[:N_VAL]:
    save(p, dst / "val" / f"lfw_{p.stem}.png", LFW_CROP)
for p in sorted((src / "hq512").iterdir()):
    save(p, dst / "unseen" / f"{p.stem}.png")

lq = sorted(p for p in (src / "real_lq_aligned").iterdir())
(dst / "real_lq").mkdir(exist_ok=True)
for p in lq[::7][:6]:
    save(p, dst / "real_lq" / (p.stem + ".png"), size=128)
(dst / "whole").mkdir(exist_ok=True)
for name in ("codeformer_00.jpg", "dlib_voc_2008_001009.jpg", "gfpgan_Blake_Lively.jpg"):
    shutil.copyfile(src / "whole" / name, dst / "whole" / name)
