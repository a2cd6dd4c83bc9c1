"""One-off: select and resize the embedded demo faces from ../shared/data/faces (kept for provenance)."""
import shutil
from pathlib import Path

from PIL import Image

src = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces"
dst = Path("src/daefr/assets/demo_faces")
for sub in ("train", "val", "real_lq", "whole"):
    (dst / sub).mkdir(parents=True, exist_ok=True)

train = sorted(p for p in (src / "train_utkface").iterdir())
# every other file, 400 faces, keeps the mix of ages; 64 px PNG (lossless)
for p in train[::2][:400]:
    im = Image.open(p).convert("RGB").resize((64, 64), Image.BICUBIC)
    im.save(dst / "train" / (p.name.split(".jpg")[0] + ".png"), optimize=True)

# held out: 40 UTKFace faces never used for training (odd positions of the sorted list), same framing
for p in train[1::2][:40]:
    im = Image.open(p).convert("RGB").resize((64, 64), Image.BICUBIC)
    im.save(dst / "val" / (p.name.split(".jpg")[0] + ".png"), optimize=True)

lq = sorted(p for p in (src / "real_lq_aligned").iterdir())
for p in lq[::7][:6]:
    im = Image.open(p).convert("RGB").resize((128, 128), Image.BICUBIC)
    im.save(dst / "real_lq" / (p.stem + ".png"), optimize=True)

for name in ("codeformer_00.jpg", "dlib_voc_2008_001009.jpg", "gfpgan_Blake_Lively.jpg"):
    shutil.copyfile(src / "whole" / name, dst / "whole" / name)
