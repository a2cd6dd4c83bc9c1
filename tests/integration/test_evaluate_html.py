"""The HTML reports render in headless Chromium: screenshot taken, tables, plots, thumbnails and images
present, JS sorts; compare.html renders its win counts and A-vs-B plots."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from daefr.metrics.images import read_rgb8, write_rgb8
from daefr.metrics.report import write_comparison, write_run
from daefr.metrics.suite import MetricsConfig, evaluate_folders

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install -y chromium); CI must install it"
)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars"]


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=False)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("html")
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:48, 0:48]
    for i in range(4):
        gt = np.stack([(xx * 5 + 40 * i) % 256, (yy * 5) % 256, ((xx + yy) * 3) % 256], -1).astype(np.uint8)
        noisy = np.clip(gt + rng.normal(0, 5 + 10 * i, gt.shape), 0, 255).astype(np.uint8)
        write_rgb8(root / "gt" / f"img{i}.png", gt)
        write_rgb8(root / "restored" / f"img{i}.png", noisy)
        write_rgb8(root / "lq" / f"img{i}.png", noisy[::4, ::4])
        write_rgb8(root / "other" / f"img{i}.png", np.clip(gt + rng.normal(0, 12, gt.shape), 0, 255).astype(np.uint8))
        (root / "params").mkdir(exist_ok=True)  # as make-testset writes it beside lq/ and gt/
        (root / "params" / f"img{i}.json").write_text(json.dumps({"preset": "check", "params": {"noise_sigma": 5.0 + 10 * i}}))
    cfg = MetricsConfig(metrics=("psnr", "ssim"))
    write_run(evaluate_folders(root / "other", root / "gt", root / "lq", cfg), root / "run_other", title="other")
    result = evaluate_folders(root / "restored", root / "gt", root / "lq", cfg)
    html_path = write_run(result, root / "run", title="chromium check")["html"]
    write_comparison(root / "run", root / "run_other", root / "cmp", title="chromium compare")
    return html_path


def test_report_screenshot(report: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    proc = _chromium([f"--screenshot={shot}", "--window-size=900,1200", report.as_uri()], tmp_path)
    assert shot.is_file(), f"chromium wrote no screenshot: {proc.stderr[-2000:]}"
    pixels = read_rgb8(shot)
    assert pixels.shape == (1200, 900, 3)
    # not a blank page: text, table borders and the image strips give many distinct colours
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
    assert pixels.std() > 20


def test_report_dom_has_tables_images_and_sorts(report: Path, tmp_path: Path) -> None:
    proc = _chromium(["--dump-dom", report.as_uri() + "#sort=psnr-asc"], tmp_path)
    dom = proc.stdout
    assert 'id="summary"' in dom and 'id="per-image"' in dom, proc.stderr[-2000:]
    assert len(re.findall(r'<img src="data:image/png;base64,', dom)) >= 9  # LQ | restored | GT x (3 best + worst)
    body = dom[dom.index('id="per-image"'):]
    body = body[:body.index("</table>")]
    order = re.findall(r'<tr id="row-\d"><td data-v="(img\d)"', body)
    psnr = [float(v) for v in re.findall(r'<tr id="row-\d"><td data-v="img\d">img\d</td><td data-v="([^"]+)"', body)]
    assert sorted(order) == ["img0", "img1", "img2", "img3"]
    assert psnr == sorted(psnr) and order[0] == "img3"  # the noisiest image has the lowest PSNR
    assert len(re.findall(r'<img class="plot" src="data:image/png;base64,', dom)) == 2  # PSNR and SSIM histograms
    assert len(re.findall(r'<img src="data:image/jpeg;base64,', dom)) == 4  # one thumbnail per image
    assert 'id="params"' in dom and 'id="provenance"' in dom


def test_compare_renders(report: Path, tmp_path: Path) -> None:
    page = report.parent.parent / "cmp" / "compare.html"
    shot = tmp_path / "compare.png"
    proc = _chromium([f"--screenshot={shot}", "--window-size=900,1600", page.as_uri()], tmp_path)
    assert shot.is_file(), f"chromium wrote no screenshot: {proc.stderr[-2000:]}"
    assert len(np.unique(read_rgb8(shot).reshape(-1, 3), axis=0)) > 200
    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path).stdout
    assert len(re.findall(r'<img class="plot" src="data:image/png;base64,', dom)) == 2  # PSNR and SSIM: A vs B
    assert re.search(r'<td class="wins">\d of 4</td>', dom) and 'id="params"' in dom
    assert len(re.findall(r'<img src="data:image/jpeg;base64,', dom)) == 2 * 4  # A | B thumbnails
