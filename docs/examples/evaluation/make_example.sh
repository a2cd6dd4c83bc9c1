#!/usr/bin/env bash
# Regenerates this example from the repository root: bash docs/examples/evaluation/make_example.sh
# Only PSNR, SSIM and LMD run here (no LPIPS/FID/ArcFace/NIQE weight files in the repository):
# the reports show the other metrics as skipped, with the file each one needs.
set -euo pipefail
ex=docs/examples/evaluation
rm -rf "$ex/testset" "$ex/classical" "$ex/run_lq" "$ex/run_classical" "$ex/compare"
daefr make-testset --hq src/daefr/assets/demo_faces/val --limit 4 --size 96 --preset daefr_small --seed 0 --out "$ex/testset"
python "$ex/classical_baseline.py" "$ex/testset/lq" "$ex/classical"
daefr evaluate --restored "$ex/testset/lq" --gt "$ex/testset/gt" --lq "$ex/testset/lq" --out "$ex/run_lq" \
  --title "Example: degraded inputs scored as they are (no restoration)"
daefr evaluate --restored "$ex/classical" --gt "$ex/testset/gt" --lq "$ex/testset/lq" --out "$ex/run_classical" \
  --title "Example: classical denoise + sharpen baseline (not DAEFR)"
daefr evaluate --compare "$ex/run_lq" "$ex/run_classical" --out "$ex/compare" \
  --title "Example: LQ inputs (A) vs classical baseline (B)"
