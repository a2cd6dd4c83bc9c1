"""Report writer: strict JSON (inf as "inf"), CSV round trip, HTML content, best/worst ranking, compare;
provenance, mean ± std, win counts, plots (and their absence without matplotlib), labelled strips,
thumbnails and make-testset degradation parameters."""

from __future__ import annotations

import hashlib
import json
import math
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from daefr.metrics.images import write_rgb8
from daefr.metrics.report import (
    evaluate_to_folder,
    json_number,
    parse_number,
    rank_rows,
    read_run,
    write_comparison,
    write_run,
)
from daefr.metrics.report_stats import spread, win_counts
from daefr.metrics.suite import EvaluationResult, MetricsConfig, evaluate_folders


def _strict_loads(text: str) -> object:
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def _section(page: str, heading: str) -> str:
    """The HTML from ``<h2>heading`` up to the next ``<h2>``."""
    start = page.index(f"<h2>{heading}")
    end = page.find("<h2>", start + 4)
    return page[start:] if end < 0 else page[start:end]


def test_json_numbers_round_trip() -> None:
    for value in (1.5, math.inf, -math.inf, None, 0.0):
        assert parse_number(json_number(value)) == value
    assert json_number(math.inf) == "inf"
    assert math.isnan(parse_number(json_number(math.nan)))  # type: ignore[arg-type]


def test_rank_rows_respects_direction() -> None:
    rows = [{"name": str(i), "psnr": p, "lpips": lp} for i, (p, lp) in enumerate([(20, 0.3), (30, 0.1), (25, 0.2)])]
    best, worst = rank_rows(rows, "psnr", 1)
    assert best[0]["name"] == "1" and worst[0]["name"] == "0"
    best, worst = rank_rows(rows, "lpips", 2)
    assert [r["name"] for r in best] == ["1", "2"] and [r["name"] for r in worst] == ["0"]


def test_spread_is_mean_and_sample_std() -> None:
    s = spread([1.0, 2.0, None, 3.0, math.nan])
    assert (s.n, s.mean, s.std) == (3, 2.0, 1.0)
    assert spread([4.0]) == type(s)(1, 4.0, None)  # one value: std undefined
    assert spread([]).mean is None
    s = spread([math.inf, 20.0])
    assert s.mean == math.inf and s.std is None  # std undefined with an infinite value
    values = [0.3, 0.5, 0.9, 1.7]
    assert spread(values).std == pytest.approx(float(np.std(values, ddof=1)), rel=1e-12)


def test_win_counts_follow_the_metric_direction() -> None:
    pairs = [(20.0, 25.0), (30.0, 28.0), (22.0, 22.0), (math.inf, math.inf), (None, 3.0), (1.0, math.nan), (10.0, math.inf)]
    psnr = win_counts(pairs, higher_is_better=True)
    assert (psnr.b_better, psnr.a_better, psnr.ties, psnr.compared) == (2, 1, 2, 5)
    lpips = win_counts(pairs, higher_is_better=False)  # lower is better: the same pairs swap sides
    assert (lpips.b_better, lpips.a_better, lpips.ties) == (1, 2, 2)


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    rng = np.random.default_rng(0)
    gt, restored, lq = tmp_path / "gt", tmp_path / "restored", tmp_path / "lq"
    for i in range(3):
        img = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        write_rgb8(gt / f"face{i}.png", img)
        noisy = np.clip(img + rng.normal(0, 4 * (i + 1), img.shape), 0, 255).astype(np.uint8)
        write_rgb8(restored / f"face{i}.png", img if i == 0 else noisy)  # face0 is perfect: PSNR inf
        write_rgb8(lq / f"face{i}.png", noisy[::2, ::2])
    return gt, restored, lq


def test_write_run_outputs(folders: tuple[Path, Path, Path], tmp_path: Path) -> None:
    gt, restored, lq = folders
    write_rgb8(restored / "extra.png", np.zeros((32, 32, 3), np.uint8))  # no GT: reported, not scored
    result = evaluate_folders(restored, gt, lq, MetricsConfig(metrics=("psnr", "ssim", "niqe")))
    assert result.info["unpaired"] == ["extra"] and len(result.rows) == 3
    assert "niqe" in result.skipped and "niqe_pris_params.npz" in result.skipped["niqe"]
    assert result.rows[0]["psnr"] == math.inf and result.summary["psnr"] == math.inf
    paths = write_run(result, tmp_path / "run", title="unit run")
    data = _strict_loads(paths["json"].read_text())
    assert isinstance(data, dict) and data["summary"]["psnr"] == "inf" and data["skipped"]["niqe"]
    ssim = [r["ssim"] for r in result.rows]
    assert data["std"]["ssim"] == pytest.approx(float(np.std(ssim, ddof=1)), rel=1e-9)
    assert data["std"]["psnr"] is None and data["count"] == {"psnr": 3, "ssim": 3}  # inf: std undefined
    summary, rows = read_run(tmp_path / "run")
    assert summary["summary"]["psnr"] == math.inf
    assert [r["name"] for r in rows] == ["face0", "face1", "face2"]
    assert rows[1]["psnr"] == pytest.approx(result.rows[1]["psnr"], rel=1e-12)
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") >= 6  # LQ | restored | GT strips for best and worst
    assert 'id="per-image"' in page and "<script>" in page and "skipped" in page
    assert "Best images by PSNR" in page and "Worst images by PSNR" in page
    assert "only one folder, not scored: extra" in page
    summary_table = page[page.index('id="summary"'):page.index("</table>", page.index('id="summary"'))]
    assert f"{np.mean(ssim):.4f} &plusmn; {np.std(ssim, ddof=1):.4f}" in summary_table
    # strips: every panel labelled, the restored panel with the image's metric values
    best = _section(page, "Best images by PSNR")
    assert best.count("<b>LQ</b>") == best.count("<b>restored</b>") == best.count("<b>GT</b>") == 3
    face1 = result.rows[1]
    assert f"PSNR {face1['psnr']:.4f} &middot; SSIM {face1['ssim']:.4f}" in page
    # one thumbnail per scored image, each linking to its row of the per-image table
    thumbs = _section(page, "All images")
    assert thumbs.count("data:image/jpeg;base64,") == 3
    for anchor in re.findall(r'<a href="#(row-\d+)"', thumbs):
        assert f'<tr id="{anchor}">' in page
    # histograms: PSNR (the two finite values) and SSIM
    plots = _section(page, "Per-image distributions")
    assert plots.count('class="plot"') == 2 and "Plots skipped" not in page


def test_provenance_defaults_and_weights(folders: tuple[Path, Path, Path], tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    from daefr import __version__

    gt, restored, _ = folders
    weights = tmp_path / "model.safetensors"
    arch = {"resolution": 32, "n_embed": 64}
    save_file({"a.weight": torch.zeros(3, 4), "b.bias": torch.zeros(5)}, str(weights),
              metadata={"format": "daefr.restorer", "arch": json.dumps(arch)})
    cfg = MetricsConfig(metrics=("psnr",))
    _, paths = evaluate_to_folder(restored, tmp_path / "plain", gt_dir=gt, config=cfg)
    plain = _strict_loads(paths["json"].read_text())
    assert isinstance(plain, dict)
    prov = plain["provenance"]
    assert prov["daefr_version"] == __version__ and prov["weights"] is None
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", prov["date"]) and prov["machine"] and prov["command"]
    command = ["daefr", "evaluate", "--checkpoint", str(weights), "--lq", "lq dir"]
    _, paths = evaluate_to_folder(restored, tmp_path / "model", gt_dir=gt, config=cfg,
                                  provenance={"weights": str(weights), "command": command, "note": "unit"})
    data = _strict_loads(paths["json"].read_text())
    assert isinstance(data, dict)
    prov = data["provenance"]
    assert prov["weights_sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert prov["parameters"] == 12 + 5 and prov["architecture"] == arch and prov["note"] == "unit"
    assert prov["command"] == f"daefr evaluate --checkpoint {weights} --lq 'lq dir'"
    table = _section(paths["html"].read_text(), "Provenance")
    for text in (prov["weights_sha256"], str(weights), "&quot;n_embed&quot;: 64", "daefr version", __version__,
                 "&#x27;lq dir&#x27;", "machine", prov["date"]):
        assert text in table, text
    missing = write_run(evaluate_folders(restored, gt, None, cfg), tmp_path / "missing",
                        provenance={"weights": tmp_path / "gone.ckpt", "run": {"dir": tmp_path}})
    gone = json.loads(missing["json"].read_text())["provenance"]
    assert gone["weights_sha256"] is None and "not found" in gone["weights_note"]
    assert gone["weights"] == str(tmp_path / "gone.ckpt") and gone["run"] == {"dir": str(tmp_path)}  # Paths as text
    write_comparison(tmp_path / "missing", tmp_path / "model", tmp_path / "cmp", provenance={"out": tmp_path})
    assert json.loads((tmp_path / "cmp" / "compare.json").read_text())["provenance"]["out"] == str(tmp_path)


def _testset(tmp_path: Path, broken: str | None = None) -> tuple[Path, Path, Path]:
    """A make-testset-like folder: gt/, lq/, params/NAME.json; restored = a noisier copy of GT."""
    rng = np.random.default_rng(1)
    root = tmp_path / "set"
    for i in range(4):
        img = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        noise = 3.0 + 5 * i
        write_rgb8(root / "gt" / f"im{i}.png", img)
        write_rgb8(root / "lq" / f"im{i}.png", np.clip(img + rng.normal(0, noise, img.shape), 0, 255).astype(np.uint8))
        record = {"name": f"im{i}", "preset": "unit_preset", "seed": 7 + i, "size": [24, 24],
                  "params": {"noise_sigma": noise, "jpeg_quality": 60 + i, "gray": i == 2, "noise_seed": 123456789}}
        (root / "params").mkdir(parents=True, exist_ok=True)
        (root / "params" / f"im{i}.json").write_text(json.dumps(record))
    if broken:
        (root / "params" / f"{broken}.json").write_text("{not json")
    return root / "gt", root / "lq", root


def test_degradation_parameters_shown(tmp_path: Path) -> None:
    gt, lq, root = _testset(tmp_path)
    result, paths = evaluate_to_folder(lq, tmp_path / "run", gt_dir=gt, lq_dir=lq, config=MetricsConfig(metrics=("psnr",)))
    page = paths["html"].read_text()
    table = _section(page, "Degradation parameters")
    assert 'id="params"' in table
    for i in range(4):
        row = re.search(rf'<tr><td data-v="im{i}">.*?</tr>', table)
        assert row is not None
        assert f'data-v="{3.0 + 5 * i!r}">{3.0 + 5 * i:.3g}</td>' in row.group(0)  # noise_sigma
        assert f">{60 + i}</td>" in row.group(0) and "unit_preset" in row.group(0)
        assert ">yes</td>" in row.group(0) if i == 2 else ">no</td>" in row.group(0)
    assert "noise_seed" not in page  # a replay seed, not a description of the degradation
    assert "degradation: preset=unit_preset, noise_sigma=" in _section(page, "Best images by PSNR")
    data = json.loads(paths["json"].read_text())
    assert Path(data["testset_params"]) == (root / "params").resolve()
    # compare: the parameters come from run A's test set
    result_b, _ = evaluate_to_folder(gt, tmp_path / "run_b", gt_dir=gt, lq_dir=lq, config=MetricsConfig(metrics=("psnr",)))
    cmp = write_comparison(tmp_path / "run", tmp_path / "run_b", tmp_path / "cmp")["html"].read_text()
    assert 'id="params"' in cmp and cmp.count("degradation: preset=unit_preset") >= 1
    assert len(result.rows) == len(result_b.rows) == 4


def test_unreadable_parameter_file_is_a_note(tmp_path: Path) -> None:
    gt, lq, _ = _testset(tmp_path, broken="im1")
    _, paths = evaluate_to_folder(lq, tmp_path / "run", gt_dir=gt, lq_dir=lq, config=MetricsConfig(metrics=("psnr",)))
    page = paths["html"].read_text()
    assert "im1.json: degradation parameters not shown (JSONDecodeError" in _section(page, "Notes")
    table = _section(page, "Degradation parameters")
    assert len(re.findall(r'<tr><td data-v="im\d">', table)) == 3


def test_no_parameters_without_make_testset(folders: tuple[Path, Path, Path], tmp_path: Path) -> None:
    gt, restored, lq = folders
    _, paths = evaluate_to_folder(restored, tmp_path / "run", gt_dir=gt, lq_dir=lq, config=MetricsConfig(metrics=("psnr",)))
    page = paths["html"].read_text()
    assert "Degradation parameters" not in page and "degradation:" not in page
    assert json.loads(paths["json"].read_text())["testset_params"] is None


def test_reports_without_matplotlib(folders: tuple[Path, Path, Path], tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    gt, restored, lq = folders
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    cfg = MetricsConfig(metrics=("psnr", "ssim"))
    page = write_run(evaluate_folders(restored, gt, lq, cfg), tmp_path / "a")["html"].read_text()
    write_run(evaluate_folders(gt, gt, lq, cfg), tmp_path / "b")
    cmp = write_comparison(tmp_path / "a", tmp_path / "b", tmp_path / "cmp")["html"].read_text()
    for html_text in (page, cmp):
        assert "Plots skipped: matplotlib is not installed" in html_text and "daefr[experiments]" in html_text
        assert 'class="plot"' not in html_text and 'id="per-image"' in html_text


def test_comparison(folders: tuple[Path, Path, Path], tmp_path: Path) -> None:
    gt, restored, _ = folders
    cfg = MetricsConfig(metrics=("psnr", "ssim"))
    write_run(evaluate_folders(restored, gt, None, cfg), tmp_path / "a")
    write_run(evaluate_folders(gt, gt, None, cfg), tmp_path / "b")
    paths = write_comparison(tmp_path / "a", tmp_path / "b", tmp_path / "cmp")
    data = _strict_loads(paths["json"].read_text())
    assert isinstance(data, dict)
    assert data["summary"]["ssim"]["b"] == 1.0 and data["summary"]["ssim"]["b_minus_a"] > 0
    face2 = next(i for i in data["images"] if i["name"] == "face2")
    assert face2["psnr"]["b"] == "inf" and face2["psnr"]["b_minus_a"] == "inf"
    face0 = next(i for i in data["images"] if i["name"] == "face0")
    assert face0["psnr"]["b_minus_a"] is None  # inf vs inf: no meaningful difference
    assert data["summary"]["psnr"]["wins"] == {"b_better": 2, "a_better": 0, "ties": 1, "compared": 3}
    page = paths["html"].read_text()
    assert 'class="better"' in page
    strips = _section(page, "Images B improved most (PSNR)")
    assert strips.count("data:image/png;base64,") == 2 * 3  # A, B, GT (no LQ folder)
    assert strips.count("<b>A</b>") == strips.count("<b>B</b>") == strips.count("<b>GT</b>") == 2
    assert "worsened most" not in page  # B is the ground truth itself: nothing got worse
    assert "PSNR inf &middot; SSIM 1.0000" in strips  # B's values under its panel


def test_comparison_win_counts_and_plots(tmp_path: Path) -> None:
    """Mixed outcomes: the counts in compare.json/html equal those counted from the per-image values."""
    rng = np.random.default_rng(3)
    gt, ra, rb = tmp_path / "gt", tmp_path / "ra", tmp_path / "rb"
    for i in range(8):
        img = rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)
        write_rgb8(gt / f"p{i}.png", img)
        for folder, sigma in ((ra, 6.0 + 4 * (i % 3)), (rb, 6.0 + 4 * ((i + 1) % 3))):
            write_rgb8(folder / f"p{i}.png", np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8))
    cfg = MetricsConfig(metrics=("psnr", "ssim"))
    res_a, _ = evaluate_to_folder(ra, tmp_path / "a", gt_dir=gt, config=cfg)
    res_b, _ = evaluate_to_folder(rb, tmp_path / "b", gt_dir=gt, config=cfg)
    paths = write_comparison(tmp_path / "a", tmp_path / "b", tmp_path / "cmp", provenance={"note": "cmp test"})
    data = json.loads(paths["json"].read_text())
    page = paths["html"].read_text()
    summary = page[page.index('id="summary"'):page.index("</table>", page.index('id="summary"'))]
    for metric in ("psnr", "ssim"):
        a = {r["name"]: r[metric] for r in res_a.rows}
        b = {r["name"]: r[metric] for r in res_b.rows}
        b_better = sum(b[n] > a[n] for n in a)
        a_better = sum(b[n] < a[n] for n in a)
        assert 0 < b_better < 8 and 0 < a_better < 8  # a real mix
        assert data["summary"][metric]["wins"] == {"b_better": b_better, "a_better": a_better,
                                                    "ties": 8 - b_better - a_better, "compared": 8}
        assert data["summary"][metric]["a_std"] == pytest.approx(float(np.std(list(a.values()), ddof=1)), rel=1e-9)
        row = re.search(rf"<tr><td>{metric.upper()} .*?</tr>", summary)
        assert row is not None
        assert f"{np.mean(list(a.values())):.4f} &plusmn; {np.std(list(a.values()), ddof=1):.4f}" in row.group(0)
        assert f"{np.mean(list(b.values())):.4f} &plusmn; {np.std(list(b.values()), ddof=1):.4f}" in row.group(0)
        assert f'<td class="wins">{b_better} of 8</td><td>{a_better} of 8</td>' in row.group(0)
    assert _section(page, "A vs B per image").count('class="plot"') == 2
    assert _section(page, "All images").count("data:image/jpeg;base64,") == 2 * 8  # A | B per image
    prov = _section(page, "Provenance")
    assert "A: daefr evaluation" in prov and "cmp test" in prov and data["provenance"]["note"] == "cmp test"


def test_comparison_of_run_folders_written_before_provenance(folders: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Older summary.json files have no provenance/std/count: the comparison computes the std from the CSV."""
    gt, restored, _ = folders
    cfg = MetricsConfig(metrics=("ssim",))
    for name, folder in (("a", restored), ("b", gt)):
        paths = write_run(evaluate_folders(folder, gt, None, cfg), tmp_path / name)
        data = json.loads(paths["json"].read_text())
        for key in ("provenance", "std", "count", "testset_params"):
            del data[key]
        paths["json"].write_text(json.dumps(data))
    out = write_comparison(tmp_path / "a", tmp_path / "b", tmp_path / "cmp")
    page = out["html"].read_text()
    assert page.count("not recorded") >= 2 * 5  # weights, command, version, date, machine of A and of B
    _, rows = read_run(tmp_path / "a")
    std = float(np.std([r["ssim"] for r in rows], ddof=1))
    assert json.loads(out["json"].read_text())["summary"]["ssim"]["a_std"] == pytest.approx(std, rel=1e-9)


def test_result_without_rows_is_rejected_cleanly(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    from daefr.errors import ConfigError

    with pytest.raises(ConfigError, match="no images"):
        evaluate_folders(empty)
    with pytest.raises(ConfigError, match="not an evaluation run folder"):
        read_run(empty)
    assert EvaluationResult([], {}).skipped == {}


@pytest.mark.parametrize("values", [[1.0] * 40, [1.0, 1.0 + 2.2e-16] * 20, [100.0, 100.0 + 1.5e-14] * 20])
def test_plots_of_values_equal_up_to_rounding_render(values: list[float]) -> None:
    from daefr.metrics.report_plots import comparison_uri, histogram_uri

    # numpy refuses to cut 13 bins out of a range of one ulp; the plots widen the range instead
    assert str(histogram_uri(values, "ssim")).startswith("data:image/png;base64,")
    assert str(comparison_uri(values, values[::-1], "ssim", True)).startswith("data:image/png;base64,")
