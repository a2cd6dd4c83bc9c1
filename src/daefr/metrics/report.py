"""Write an evaluation run to a folder: ``per_image.csv``, ``summary.json`` and a self-contained
``report.html`` (summary table, per-image table sortable by any column, LQ | restored | GT strips of the
best and worst images as inline PNGs); :func:`write_comparison` puts two runs side by side.

JSON convention: non-finite numbers (PSNR of identical images is +inf) are written as the strings
``"inf"``, ``"-inf"`` and ``"nan"`` (JSON has no infinity); a metric that could not be computed is
``null``. :func:`read_run` turns them back into floats/None. The CSV writes ``inf`` and empty cells.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from daefr.metrics.suite import HIGHER_IS_BETTER, UNITS, EvaluationResult

FORMAT = "daefr-evaluation/1"
LABELS = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "deg": "Deg", "ids": "IDS", "lmd": "LMD", "niqe": "NIQE", "fid": "FID"}
PRIMARY_ORDER = ("lpips", "psnr", "deg", "ids", "ssim", "lmd", "niqe")


def json_number(value: Any) -> Any:
    """A float for JSON: finite as is, non-finite as "inf"/"-inf"/"nan", None stays None."""
    if value is None:
        return None
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return value


def parse_number(value: Any) -> float | None:
    """Inverse of :func:`json_number` (also reads CSV cells): float or None."""
    if value is None or value == "":
        return None
    return float(value)


def _atomic_write(path: Path, text: str) -> None:
    from daefr.utils.io import atomic_write_text

    atomic_write_text(path, text)


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def _png_data_uri(image: np.ndarray, height: int = 128) -> str:
    from PIL import Image

    img = Image.fromarray(image)
    if img.height > height:  # smaller images stay native (small file) and are scaled up by the browser
        img = img.resize((max(1, round(img.width * height / img.height)), height), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def primary_metric(metrics: Sequence[str], rows: Sequence[dict[str, Any]]) -> str | None:
    """The metric that ranks best/worst images: LPIPS, else PSNR, Deg, SSIM, LMD, NIQE (first present)."""
    for name in PRIMARY_ORDER:
        if name in metrics and any(r.get(name) is not None for r in rows):
            return name
    return None


def rank_rows(rows: Sequence[dict[str, Any]], metric: str, count: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(best, worst) rows by ``metric`` (direction-aware, rows without a value left out)."""
    scored = [r for r in rows if r.get(metric) is not None and not math.isnan(r[metric])]
    ordered = sorted(scored, key=lambda r: r[metric], reverse=HIGHER_IS_BETTER[metric])
    best = ordered[:count]
    worst = [r for r in reversed(ordered) if r not in best][:count]
    return best, worst


def write_run(result: EvaluationResult, out_dir: str | os.PathLike[str], title: str = "daefr evaluation",
              examples: int = 3) -> dict[str, Path]:
    """Write ``per_image.csv``, ``summary.json`` and ``report.html`` into ``out_dir``; returns the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_image = [n for n in result.metrics if n != "fid" and n not in result.skipped]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", *per_image, "restored", "gt", "lq"])
    for row in result.rows:
        writer.writerow([row["name"], *("" if row.get(n) is None else repr(float(row[n])) for n in per_image),
                         row.get("restored") or "", row.get("gt") or "", row.get("lq") or ""])
    paths = {"csv": out / "per_image.csv", "json": out / "summary.json", "html": out / "report.html"}
    _atomic_write(paths["csv"], buf.getvalue())
    summary = {
        "format": FORMAT,
        "title": title,
        "metrics": result.metrics,
        "summary": {k: json_number(v) for k, v in result.summary.items()},
        "skipped": result.skipped,
        "errors": result.errors,
        "info": result.info,
    }
    _atomic_write(paths["json"], json.dumps(summary, indent=2, default=str) + "\n")
    _atomic_write(paths["html"], render_html(result, title, examples))
    return paths


def evaluate_to_folder(
    restored_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str] | None = None,
    lq_dir: str | os.PathLike[str] | None = None,
    config: Any = None,
    title: str = "daefr evaluation",
    examples: int = 3,
) -> tuple[EvaluationResult, dict[str, Path]]:
    """Score a folder (see :func:`daefr.metrics.suite.evaluate_folders`) and write its report in one call."""
    from daefr.metrics.suite import evaluate_folders

    result = evaluate_folders(restored_dir, gt_dir, lq_dir, config)
    return result, write_run(result, out_dir, title=title, examples=examples)


def read_run(run_dir: str | os.PathLike[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Read a run folder back: (summary.json contents with numbers parsed, per-image rows)."""
    from daefr.errors import ConfigError

    root = Path(run_dir)
    summary_file, csv_file = root / "summary.json", root / "per_image.csv"
    if not summary_file.is_file() or not csv_file.is_file():
        raise ConfigError(f"{str(root)!r} is not an evaluation run folder (needs summary.json and per_image.csv)")
    data = json.loads(summary_file.read_text(encoding="utf-8"))
    data["summary"] = {k: parse_number(v) for k, v in data.get("summary", {}).items()}
    with csv_file.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        metric_cols = [c for c in (reader.fieldnames or []) if c not in ("name", "restored", "gt", "lq")]
        rows = [{**r, **{c: parse_number(r[c]) for c in metric_cols}} for r in reader]
    return data, rows


_STYLE = """
body{font-family:system-ui,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:" \\2195";color:#999}
.better{color:#0a7d22}.worse{color:#b3261e}.note{color:#666;font-size:12px}
.strip{display:flex;gap:6px;align-items:flex-start;margin:6px 0 14px}
.strip figure{margin:0;text-align:center;font-size:12px}.strip img{display:block;height:128px;width:auto}
code{background:#f4f4f4;padding:1px 4px}
"""

_SORT_JS = """
function daefrSort(table, col, asc){
  var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
  table.querySelectorAll('th').forEach(function(h){ h.removeAttribute('data-dir'); });
  table.tHead.rows[0].cells[col].setAttribute('data-dir', asc ? 'asc' : 'desc');
  rows.sort(function(a, b){
    var x = a.cells[col].getAttribute('data-v'), y = b.cells[col].getAttribute('data-v');
    var nx = x === '' ? -Infinity : parseFloat(x), ny = y === '' ? -Infinity : parseFloat(y);
    if (x === null || y === null || isNaN(nx) || isNaN(ny)) {
      x = a.cells[col].textContent; y = b.cells[col].textContent;
      return asc ? x.localeCompare(y) : y.localeCompare(x);
    }
    return asc ? nx - ny : ny - nx;
  });
  rows.forEach(function(r){ body.appendChild(r); });
}
document.querySelectorAll('table.sortable').forEach(function(table){
  table.querySelectorAll('th').forEach(function(th, col){
    th.addEventListener('click', function(){ daefrSort(table, col, th.getAttribute('data-dir') !== 'asc'); });
  });
});
// A link such as report.html#sort=psnr-desc opens the per-image table sorted by that column.
(function(){
  var m = /sort=([A-Za-z0-9_ ]+?)-(asc|desc)/.exec(decodeURIComponent(location.hash));
  var table = document.getElementById('per-image');
  if (!m || !table) return;
  table.querySelectorAll('th').forEach(function(th, col){
    if (th.getAttribute('data-key') === m[1]) daefrSort(table, col, m[2] === 'asc');
  });
})();
"""


def _cell(value: float | None, digits: int = 4, cls: str = "") -> str:
    sort_value = "" if value is None else ("Infinity" if value == math.inf else repr(float(value)))
    klass = f' class="{cls}"' if cls else ""
    return f'<td data-v="{sort_value}"{klass}>{_fmt(value, digits)}</td>'


def _header(name: str) -> str:
    arrow = "&uarr;" if HIGHER_IS_BETTER[name] else "&darr;"
    unit = f" ({UNITS[name]})" if UNITS.get(name) else ""
    return f"{LABELS.get(name, name)} {arrow}{unit}"


def _page(title: str, body: list[str]) -> str:
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(body)
        + f"\n<script>{_SORT_JS}</script>\n</body></html>\n"
    )


def _panels(caption: str, panels: Sequence[tuple[str, str | None]], alt: str) -> str:
    from daefr.metrics.images import read_rgb8

    figures = []
    for label, path in panels:
        if path and Path(path).is_file():
            uri = _png_data_uri(read_rgb8(path))
            figures.append(f'<figure><img src="{uri}" alt="{label} {html.escape(alt)}"><figcaption>{label}</figcaption></figure>')
    return f'<div>{caption}<div class="strip">{"".join(figures)}</div></div>'


def _strip(row: dict[str, Any], metric: str) -> str:
    caption = f"<b>{html.escape(row['name'])}</b> &mdash; {LABELS.get(metric, metric)} {_fmt(row.get(metric))}"
    panels = [("LQ", row.get("lq")), ("restored", row.get("restored")), ("GT", row.get("gt"))]
    return _panels(caption, panels, row["name"])


def render_html(result: EvaluationResult, title: str = "daefr evaluation", examples: int = 3) -> str:
    """The self-contained HTML report of one run."""
    info = result.info
    per_image = [n for n in result.metrics if n != "fid" and n not in result.skipped]
    body = [f"<h1>{html.escape(title)}</h1>"]
    facts = [("restored", info.get("restored_dir")), ("ground truth", info.get("gt_dir")),
             ("low quality", info.get("lq_dir")), ("images", info.get("images")),
             ("seconds", info.get("seconds"))]
    body.append("<p class=\"note\">" + " &middot; ".join(
        f"{k}: <code>{html.escape(str(v))}</code>" for k, v in facts if v is not None) + "</p>")
    cfg = info.get("config", {})
    body.append(f"<p class=\"note\">PSNR/SSIM on 8-bit RGB{' (Y channel)' if cfg.get('y_channel') else ''}, "
                f"crop border {cfg.get('crop_border', 0)}; LPIPS VGG on [-1, 1]; Deg = ArcFace angle in degrees; IDS = cosine similarity of dlib face descriptors; "
                "LMD in pixels; arrows show the better direction.</p>")
    body.append("<h2>Summary</h2><table id=\"summary\"><thead><tr><th>metric</th><th>mean</th>"
                "<th style=\"text-align:left\">status</th></tr></thead><tbody>")
    for name in result.metrics:
        if name in result.skipped:
            status = "skipped: " + html.escape(result.skipped[name])
            body.append(f"<tr><td>{_header(name)}</td><td>n/a</td><td style=\"text-align:left\">{status}</td></tr>")
        else:
            label = "set-level" if name == "fid" else f"mean of {sum(r.get(name) is not None for r in result.rows)} images"
            body.append(f"<tr><td>{_header(name)}</td>{_cell(result.summary.get(name))}<td style=\"text-align:left\">{label}</td></tr>")
    body.append("</tbody></table>")
    notes = list(result.errors)
    if info.get("unpaired"):
        notes.append(f"{len(info['unpaired'])} file name(s) in only one folder, not scored: " + ", ".join(info["unpaired"]))
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(e)}</li>" for e in notes) + "</ul>")
    metric = primary_metric(per_image, result.rows)
    if metric is not None and examples > 0:
        best, worst = rank_rows(result.rows, metric, examples)
        body.append(f"<h2>Best images by {LABELS[metric]}</h2>" + "".join(_strip(r, metric) for r in best))
        body.append(f"<h2>Worst images by {LABELS[metric]}</h2>" + "".join(_strip(r, metric) for r in worst))
    body.append("<h2>Per image</h2><p class=\"note\">Click a column header to sort.</p>")
    body.append("<table class=\"sortable\" id=\"per-image\"><thead><tr><th data-key=\"name\">name</th>"
                + "".join(f"<th data-key=\"{n}\">{_header(n)}</th>" for n in per_image) + "</tr></thead><tbody>")
    for row in result.rows:
        body.append(f"<tr><td data-v=\"{html.escape(row['name'])}\">{html.escape(row['name'])}</td>"
                    + "".join(_cell(row.get(n)) for n in per_image) + "</tr>")
    body.append("</tbody></table>")
    return _page(title, body)


def _diff_class(name: str, diff: float | None) -> str:
    if diff is None or diff == 0 or math.isnan(diff):
        return ""
    return "better" if (diff > 0) == HIGHER_IS_BETTER.get(name, True) else "worse"


def _difference(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or (math.isinf(a) and math.isinf(b)):
        return None
    return b - a


def _change_strips(rows_a: Sequence[dict[str, Any]], by_name_b: dict[str, dict[str, Any]], metrics: Sequence[str],
                   examples: int) -> list[str]:
    """LQ | A | B | GT strips of the images that B improved and worsened most (by the primary metric)."""
    metric = primary_metric(metrics, rows_a)
    if metric is None or examples <= 0:
        return []
    changes = []
    for ra in rows_a:
        rb = by_name_b.get(ra["name"])
        diff = _difference(ra.get(metric), rb.get(metric)) if rb is not None else None
        if diff is not None and not math.isnan(diff) and diff != 0:  # +-inf (PSNR of a perfect image) ranks first
            gain = diff if HIGHER_IS_BETTER[metric] else -diff
            changes.append((gain, ra, rb))
    changes.sort(key=lambda c: c[0], reverse=True)
    out = []
    for heading, chosen in (("improved most", [c for c in changes if c[0] > 0][:examples]),
                            ("worsened most", [c for c in reversed(changes) if c[0] < 0][:examples])):
        if not chosen:
            continue
        out.append(f"<h2>Images B {heading} ({LABELS[metric]})</h2>")
        for _gain, ra, rb in chosen:
            assert rb is not None
            caption = (f"<b>{html.escape(ra['name'])}</b> &mdash; {LABELS[metric]} A {_fmt(ra.get(metric))}, "
                       f"B {_fmt(rb.get(metric))}")
            panels = [("LQ", ra.get("lq") or rb.get("lq")), ("A", ra.get("restored")), ("B", rb.get("restored")),
                      ("GT", ra.get("gt") or rb.get("gt"))]
            out.append(_panels(caption, panels, ra["name"]))
    return out


def write_comparison(run_a: str | os.PathLike[str], run_b: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                     title: str = "daefr comparison", examples: int = 3) -> dict[str, Path]:
    """Compare two run folders: ``compare.json`` (B - A per metric and image) and ``compare.html``
    (summary, LQ | A | B | GT strips of the images B improved/worsened most, per-image table)."""
    data_a, rows_a = read_run(run_a)
    data_b, rows_b = read_run(run_b)
    metrics = [m for m in data_a.get("metrics", []) if m in data_b.get("metrics", [])]
    summary = {}
    for m in metrics:
        a, b = data_a["summary"].get(m), data_b["summary"].get(m)
        summary[m] = {"a": json_number(a), "b": json_number(b), "b_minus_a": json_number(_difference(a, b))}
    by_name_b = {r["name"]: r for r in rows_b}
    per_image_metrics = [m for m in metrics if rows_a and m in rows_a[0] and rows_b and m in rows_b[0]]
    images = []
    for ra in rows_a:
        rb = by_name_b.get(ra["name"])
        if rb is None:
            continue
        images.append({"name": ra["name"], **{
            m: {"a": ra.get(m), "b": rb.get(m), "b_minus_a": _difference(ra.get(m), rb.get(m))}
            for m in per_image_metrics}})
    out = Path(out_dir)
    result = {"format": FORMAT + "-compare", "run_a": str(run_a), "run_b": str(run_b), "summary": summary,
              "images": [{"name": i["name"], **{m: {k: json_number(v) for k, v in i[m].items()} for m in per_image_metrics}}
                         for i in images],
              "only_in_a": sorted({r["name"] for r in rows_a} - set(by_name_b)),
              "only_in_b": sorted(set(by_name_b) - {r["name"] for r in rows_a})}
    paths = {"json": out / "compare.json", "html": out / "compare.html"}
    _atomic_write(paths["json"], json.dumps(result, indent=2) + "\n")
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p class=\"note\">A: <code>{html.escape(str(run_a))}</code> &middot; B: <code>{html.escape(str(run_b))}</code>"
            " &middot; green = B better, red = B worse.</p>",
            "<h2>Summary</h2><table id=\"summary\"><thead><tr><th>metric</th><th>A</th><th>B</th><th>B &minus; A</th></tr></thead><tbody>"]
    for m in metrics:
        a, b = data_a["summary"].get(m), data_b["summary"].get(m)
        d = _difference(a, b)
        body.append(f"<tr><td>{_header(m)}</td>{_cell(a)}{_cell(b)}{_cell(d, cls=_diff_class(m, d))}</tr>")
    body.append("</tbody></table>")
    for key, label in (("only_in_a", "only in A"), ("only_in_b", "only in B")):
        if result[key]:
            body.append(f"<p class=\"note\">{label}: {html.escape(', '.join(result[key]))}</p>")
    body += _change_strips(rows_a, by_name_b, per_image_metrics, examples)
    body.append("<h2>Per image</h2><p class=\"note\">Click a column header to sort.</p>"
                "<table class=\"sortable\" id=\"per-image\"><thead><tr><th data-key=\"name\">name</th>")
    for m in per_image_metrics:
        body.append(f"<th data-key=\"{m}_a\">{LABELS[m]} A</th><th data-key=\"{m}_b\">{LABELS[m]} B</th>"
                    f"<th data-key=\"{m}_diff\">{LABELS[m]} B&minus;A</th>")
    body.append("</tr></thead><tbody>")
    for item in images:
        cells = "".join(_cell(item[m]["a"]) + _cell(item[m]["b"]) + _cell(item[m]["b_minus_a"], cls=_diff_class(m, item[m]["b_minus_a"]))
                        for m in per_image_metrics)
        body.append(f"<tr><td data-v=\"{html.escape(item['name'])}\">{html.escape(item['name'])}</td>{cells}</tr>")
    body.append("</tbody></table>")
    _atomic_write(paths["html"], _page(title, body))
    return paths
