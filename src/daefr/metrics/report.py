"""Write an evaluation run to a folder, and compare two runs.

A run folder holds ``per_image.csv``, ``summary.json`` and a self-contained
``report.html``; :func:`write_comparison` puts two runs side by side (``compare.json``, ``compare.html``).

``report.html`` holds the provenance (model file and sha256, architecture, command line, daefr version,
date, machine), mean ± sample std per metric, a histogram of each metric's per-image values, labelled
LQ | restored | GT strips of the best and worst images, a thumbnail grid of all images, the sortable
per-image table and, when the test set came from ``daefr make-testset``, each image's degradation
parameters. ``compare.html`` adds per-metric win counts (B better on N of M images), mean ± std of both
runs and an A-vs-B histogram/scatter per metric. Plots need matplotlib (extra ``experiments``);
without it the reports say the plots were skipped and why.

JSON convention: non-finite numbers (PSNR of identical images is +inf) are written as the strings
``"inf"``, ``"-inf"`` and ``"nan"`` (JSON has no infinity); a metric that could not be computed is
``null``. :func:`read_run` turns them back into floats/None. The CSV writes ``inf`` and empty cells.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from daefr.metrics.report_html import (
    LABELS,
    axis_label,
    cell,
    fmt,
    fmt_spread,
    header,
    metric_values,
    page,
    panels,
    params_table,
    provenance_table,
    thumb_figure,
    thumbnail,
)
from daefr.metrics.report_stats import spread, win_counts
from daefr.metrics.suite import HIGHER_IS_BETTER, EvaluationResult

__all__ = ["FORMAT", "LABELS", "evaluate_to_folder", "json_number", "parse_number", "primary_metric", "rank_rows",
           "read_run", "render_html", "write_comparison", "write_run"]

FORMAT = "daefr-evaluation/1"
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


def _per_image_metrics(result: EvaluationResult) -> list[str]:
    return [n for n in result.metrics if n != "fid" and n not in result.skipped]


def _testset_params(info: Mapping[str, Any], names: Sequence[str]) -> tuple[Path | None, dict[str, dict[str, Any]], list[str]]:
    from daefr.metrics.testset_params import find_params_dir, load_testset_params

    folder = find_params_dir(info.get("lq_dir"), info.get("gt_dir"))
    records, notes = load_testset_params(folder, names)
    return folder, records, notes


def write_run(result: EvaluationResult, out_dir: str | os.PathLike[str], title: str = "daefr evaluation",
              examples: int = 3, provenance: Mapping[str, Any] | None = None,
              thumbnails: bool = True) -> dict[str, Path]:
    """Write ``per_image.csv``, ``summary.json`` and ``report.html`` into ``out_dir``; returns the paths.

    ``provenance``: what produced the restored images (``weights``, ``command``, ``architecture`` or any
    other JSON-able entry); completed by :func:`daefr.metrics.provenance.collect_provenance` with the
    writer's own facts (weights sha256, daefr version, date, machine, this process's command line).
    ``thumbnails``: include the thumbnail grid of all images.
    """
    from daefr.metrics.provenance import collect_provenance

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_image = _per_image_metrics(result)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["name", *per_image, "restored", "gt", "lq"])
    for row in result.rows:
        writer.writerow([row["name"], *("" if row.get(n) is None else repr(float(row[n])) for n in per_image),
                         row.get("restored") or "", row.get("gt") or "", row.get("lq") or ""])
    paths = {"csv": out / "per_image.csv", "json": out / "summary.json", "html": out / "report.html"}
    prov = collect_provenance(provenance, device=str(result.info.get("config", {}).get("device") or "") or None)
    spreads = {n: spread(r.get(n) for r in result.rows) for n in per_image}
    params_dir, params, params_notes = _testset_params(result.info, [r["name"] for r in result.rows])
    summary = {
        "format": FORMAT,
        "title": title,
        "metrics": result.metrics,
        "summary": {k: json_number(v) for k, v in result.summary.items()},
        "std": {k: json_number(s.std) for k, s in spreads.items()},
        "count": {k: s.n for k, s in spreads.items()},
        "skipped": result.skipped,
        "errors": result.errors,
        "provenance": prov,
        "testset_params": str(params_dir) if params_dir is not None else None,
        "info": result.info,
    }
    _atomic_write(paths["csv"], buf.getvalue())
    _atomic_write(paths["json"], json.dumps(summary, indent=2, default=str) + "\n")
    _atomic_write(paths["html"], render_html(result, title, examples, provenance=prov, thumbnails=thumbnails,
                                             params=(params, params_notes)))
    return paths


def evaluate_to_folder(
    restored_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    gt_dir: str | os.PathLike[str] | None = None,
    lq_dir: str | os.PathLike[str] | None = None,
    config: Any = None,
    title: str = "daefr evaluation",
    examples: int = 3,
    provenance: Mapping[str, Any] | None = None,
) -> tuple[EvaluationResult, dict[str, Path]]:
    """Score a folder (see :func:`daefr.metrics.suite.evaluate_folders`) and write its report in one call.

    ``provenance`` as in :func:`write_run` (default: only what the writer itself knows).
    """
    from daefr.metrics.suite import evaluate_folders

    result = evaluate_folders(restored_dir, gt_dir, lq_dir, config)
    return result, write_run(result, out_dir, title=title, examples=examples, provenance=provenance)


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


def _plots_section(figures: Callable[[], list[tuple[str, str | None]]], what: str) -> list[str]:
    """The plots section of a report: heading, plot images, and notes on what is missing.

    ``<h2>`` and the plot images made by ``figures`` (label, data URI or None per metric); the reason
    when matplotlib is missing; a note naming the metrics without finite values.
    """
    from daefr.metrics.report_plots import plots_unavailable

    out = [f"<h2>{what}</h2>"]
    reason = plots_unavailable()
    if reason is not None:
        return [*out, f'<p class="note" id="plots-skipped">Plots skipped: {html.escape(reason)}.</p>']
    images, empty = [], []
    for label, uri in figures():
        if uri is None:
            empty.append(label)
        else:
            images.append(f'<img class="plot" src="{uri}" alt="{html.escape(what)}: {html.escape(label)}">')
    out.append('<div class="plots" id="plots">' + "".join(images) + "</div>")
    if empty:
        out.append(f'<p class="note">No finite per-image values to plot for: {html.escape(", ".join(empty))}.</p>')
    return out


def _strip(row: dict[str, Any], metric: str, metrics: Sequence[str], params: Mapping[str, Mapping[str, Any]]) -> str:
    caption = f"<b>{html.escape(row['name'])}</b> &mdash; {LABELS.get(metric, metric)} {fmt(row.get(metric))}"
    items = [("LQ", row.get("lq"), "input"), ("restored", row.get("restored"), metric_values(row, metrics)),
             ("GT", row.get("gt"), "reference")]
    return panels(caption, items, row["name"], _params_footer(params.get(row["name"])))


def _params_footer(record: Mapping[str, Any] | None) -> str:
    from daefr.metrics.testset_params import params_text

    return f"degradation: {html.escape(params_text(record))}" if record else ""


def _summary_rows(result: EvaluationResult) -> list[str]:
    rows = []
    for name in result.metrics:
        if name in result.skipped:
            status = "skipped: " + html.escape(result.skipped[name])
            rows.append(f"<tr><td>{header(name)}</td><td>n/a</td><td></td><td style=\"text-align:left\">{status}</td></tr>")
            continue
        values = [r.get(name) for r in result.rows]
        s = spread(values)
        if name == "fid":
            label, n = "set-level", ""
        else:
            label, n = "per-image mean &plusmn; sample std", str(s.n)
        std = None if name == "fid" else s.std
        rows.append(f"<tr><td>{header(name)}</td>{cell(result.summary.get(name), text=fmt_spread(result.summary.get(name), std))}"
                    f"<td>{n}</td><td style=\"text-align:left\">{label}</td></tr>")
    return rows


def render_html(result: EvaluationResult, title: str = "daefr evaluation", examples: int = 3,
                provenance: Mapping[str, Any] | None = None, thumbnails: bool = True,
                params: tuple[Mapping[str, Mapping[str, Any]], Sequence[str]] | None = None) -> str:
    """The self-contained HTML report of one run (``params``: degradation records by name and notes)."""
    from daefr.metrics.report_plots import histogram_uri

    info = result.info
    per_image = _per_image_metrics(result)
    records, params_notes = params if params is not None else ({}, [])
    anchors = {row["name"]: f"row-{i}" for i, row in enumerate(result.rows)}
    body = [f"<h1>{html.escape(title)}</h1>"]
    facts = [("restored", info.get("restored_dir")), ("ground truth", info.get("gt_dir")),
             ("low quality", info.get("lq_dir")), ("images", info.get("images")),
             ("seconds", info.get("seconds"))]
    body.append("<p class=\"note\">" + " &middot; ".join(
        f"{k}: <code>{html.escape(str(v))}</code>" for k, v in facts if v is not None) + "</p>")
    body.append("<h2>Provenance</h2>" + provenance_table([("this run", provenance)]))
    cfg = info.get("config", {})
    body.append(f"<p class=\"note\">PSNR/SSIM on 8-bit RGB{' (Y channel)' if cfg.get('y_channel') else ''}, "
                f"crop border {cfg.get('crop_border', 0)}; LPIPS VGG on [-1, 1]; Deg = ArcFace angle in degrees; IDS = cosine similarity of dlib face descriptors; "
                "LMD in pixels; arrows show the better direction; std is the sample standard deviation over images "
                "(undefined when a value is infinite).</p>")
    body.append("<h2>Summary</h2><table id=\"summary\"><thead><tr><th>metric</th><th>mean &plusmn; std</th>"
                "<th>images</th><th style=\"text-align:left\">status</th></tr></thead><tbody>")
    body += _summary_rows(result)
    body.append("</tbody></table>")
    notes = list(result.errors) + list(params_notes)
    if info.get("unpaired"):
        notes.append(f"{len(info['unpaired'])} file name(s) in only one folder, not scored: " + ", ".join(info["unpaired"]))
    if notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(e)}</li>" for e in notes) + "</ul>")
    if per_image and result.rows:
        body += _plots_section(lambda: [(LABELS.get(n, n), histogram_uri([r.get(n) for r in result.rows], axis_label(n)))
                                        for n in per_image], "Per-image distributions")
    metric = primary_metric(per_image, result.rows)
    if metric is not None and examples > 0:
        best, worst = rank_rows(result.rows, metric, examples)
        body.append(f"<h2>Best images by {LABELS[metric]}</h2>" + "".join(_strip(r, metric, per_image, records) for r in best))
        body.append(f"<h2>Worst images by {LABELS[metric]}</h2>" + "".join(_strip(r, metric, per_image, records) for r in worst))
    if thumbnails and result.rows:
        body.append("<h2>All images</h2><p class=\"note\">Restored images; click one for its row.</p><div class=\"thumbs\" id=\"thumbnails\">")
        for row in result.rows:
            tip = " · ".join([row["name"], metric_values(row, per_image).replace(" &middot; ", ", ")])
            caption = f"{html.escape(row['name'])}<br>{LABELS[metric]} {fmt(row.get(metric))}" if metric else html.escape(row["name"])
            body.append(thumb_figure(anchors[row["name"]], thumbnail(row.get("restored"), row["name"]), caption, tip))
        body.append("</div>")
    body.append("<h2>Per image</h2><p class=\"note\">Click a column header to sort.</p>")
    body.append("<table class=\"sortable\" id=\"per-image\"><thead><tr><th data-key=\"name\">name</th>"
                + "".join(f"<th data-key=\"{n}\">{header(n)}</th>" for n in per_image) + "</tr></thead><tbody>")
    for row in result.rows:
        body.append(f"<tr id=\"{anchors[row['name']]}\"><td data-v=\"{html.escape(row['name'])}\">{html.escape(row['name'])}</td>"
                    + "".join(cell(row.get(n)) for n in per_image) + "</tr>")
    body.append("</tbody></table>")
    if records:
        extra = [(header(n), {r["name"]: r.get(n) for r in result.rows}) for n in per_image]
        body.append("<h2>Degradation parameters</h2><p class=\"note\">As sampled by <code>daefr make-testset</code> "
                    "for each LQ image (params/NAME.json); sort by a column to see how a metric follows it.</p>")
        body.append(params_table([r["name"] for r in result.rows], records, anchors, extra))
    return page(title, body)


def _diff_class(name: str, diff: float | None) -> str:
    if diff is None or diff == 0 or math.isnan(diff):
        return ""
    return "better" if (diff > 0) == HIGHER_IS_BETTER.get(name, True) else "worse"


def _difference(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or (math.isinf(a) and math.isinf(b)):
        return None
    return b - a


def _change_strips(rows_a: Sequence[dict[str, Any]], by_name_b: dict[str, dict[str, Any]], metrics: Sequence[str],
                   examples: int, params: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Labelled LQ | A | B | GT strips of the images that B improved and worsened most (by the primary metric)."""
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
            caption = (f"<b>{html.escape(ra['name'])}</b> &mdash; {LABELS[metric]} A {fmt(ra.get(metric))}, "
                       f"B {fmt(rb.get(metric))}")
            items = [("LQ", ra.get("lq") or rb.get("lq"), "input"),
                     ("A", ra.get("restored"), metric_values(ra, metrics)),
                     ("B", rb.get("restored"), metric_values(rb, metrics)),
                     ("GT", ra.get("gt") or rb.get("gt"), "reference")]
            out.append(panels(caption, items, ra["name"], _params_footer(params.get(ra["name"]))))
    return out


def _compare_summary(metrics: Sequence[str], data_a: Mapping[str, Any], data_b: Mapping[str, Any],
                     rows_a: Sequence[dict[str, Any]], rows_b: Sequence[dict[str, Any]],
                     images: Sequence[dict[str, Any]], per_image_metrics: Sequence[str]) -> dict[str, dict[str, Any]]:
    summary: dict[str, dict[str, Any]] = {}
    for m in metrics:
        a, b = data_a["summary"].get(m), data_b["summary"].get(m)
        entry: dict[str, Any] = {"a": json_number(a), "b": json_number(b), "b_minus_a": json_number(_difference(a, b)),
                                 "higher_is_better": HIGHER_IS_BETTER[m]}
        if m in per_image_metrics:
            sa, sb = spread(r.get(m) for r in rows_a), spread(r.get(m) for r in rows_b)
            entry.update({"a_std": json_number(sa.std), "b_std": json_number(sb.std), "a_count": sa.n, "b_count": sb.n,
                          "wins": win_counts([(i[m]["a"], i[m]["b"]) for i in images], HIGHER_IS_BETTER[m]).as_json()})
        summary[m] = entry
    return summary


def write_comparison(run_a: str | os.PathLike[str], run_b: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                     title: str = "daefr comparison", examples: int = 3, provenance: Mapping[str, Any] | None = None,
                     thumbnails: bool = True) -> dict[str, Path]:
    """Compare two run folders: write ``compare.json`` and ``compare.html``.

    ``compare.json`` (per metric: A and B mean, std, B - A, win counts; per
    image: A, B, B - A) and ``compare.html`` (provenance of both runs, summary with win counts, histograms
    and A-vs-B scatter plots, labelled LQ | A | B | GT strips of the images B improved/worsened most,
    A | B thumbnails of all images, per-image table, degradation parameters).
    """
    from daefr.metrics.provenance import collect_provenance
    from daefr.metrics.report_plots import comparison_uri

    data_a, rows_a = read_run(run_a)
    data_b, rows_b = read_run(run_b)
    metrics = [m for m in data_a.get("metrics", []) if m in data_b.get("metrics", [])]
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
    summary = _compare_summary(metrics, data_a, data_b, rows_a, rows_b, images, per_image_metrics)
    prov = collect_provenance(provenance)
    out = Path(out_dir)
    result: dict[str, Any] = {"format": FORMAT + "-compare", "run_a": str(run_a), "run_b": str(run_b), "summary": summary,
              "provenance": prov,
              "images": [{"name": i["name"], **{m: {k: json_number(v) for k, v in i[m].items()} for m in per_image_metrics}}
                         for i in images],
              "only_in_a": sorted({r["name"] for r in rows_a} - set(by_name_b)),
              "only_in_b": sorted(set(by_name_b) - {r["name"] for r in rows_a})}
    paths = {"json": out / "compare.json", "html": out / "compare.html"}
    _folder, records, params_notes = _testset_params(data_a.get("info", {}), [i["name"] for i in images])
    if not records:
        _folder, records, params_notes = _testset_params(data_b.get("info", {}), [i["name"] for i in images])
    anchors = {item["name"]: f"row-{k}" for k, item in enumerate(images)}
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p class=\"note\">A: <code>{html.escape(str(run_a))}</code> &middot; B: <code>{html.escape(str(run_b))}</code>"
            " &middot; green = B better, red = B worse.</p>",
            "<h2>Provenance</h2>",
            provenance_table([(f"A: {data_a.get('title', run_a)}", data_a.get("provenance")),
                              (f"B: {data_b.get('title', run_b)}", data_b.get("provenance")),
                              ("this comparison", prov)])]
    body.append("<h2>Summary</h2><table id=\"summary\"><thead><tr><th>metric</th><th>A mean &plusmn; std</th>"
                "<th>B mean &plusmn; std</th><th>B &minus; A</th><th>B better</th><th>A better</th><th>equal</th>"
                "</tr></thead><tbody>")
    for m in metrics:
        a, b, s = data_a["summary"].get(m), data_b["summary"].get(m), summary[m]
        d = _difference(a, b)
        row = (f"<tr><td>{header(m)}</td>{cell(a, text=fmt_spread(a, parse_number(s.get('a_std'))))}"
               f"{cell(b, text=fmt_spread(b, parse_number(s.get('b_std'))))}{cell(d, cls=_diff_class(m, d))}")
        if "wins" in s:
            w = s["wins"]
            row += (f"<td class=\"wins\">{w['b_better']} of {w['compared']}</td><td>{w['a_better']} of {w['compared']}</td>"
                    f"<td>{w['ties']}</td>")
        else:
            row += "<td colspan=\"3\" style=\"text-align:left\">set-level</td>"
        body.append(row + "</tr>")
    body.append("</tbody></table><p class=\"note\">B better / A better: images on which that run scores better "
                "(in the metric's direction, arrow) among the images both runs scored; std: sample standard deviation "
                "over each run's images.</p>")
    for key, label in (("only_in_a", "only in A"), ("only_in_b", "only in B")):
        if result[key]:
            body.append(f"<p class=\"note\">{label}: {html.escape(', '.join(result[key]))}</p>")
    if params_notes:
        body.append("<h2>Notes</h2><ul>" + "".join(f"<li>{html.escape(e)}</li>" for e in params_notes) + "</ul>")
    if images and per_image_metrics:
        body += _plots_section(lambda: [(LABELS.get(m, m), comparison_uri(
            [i[m]["a"] for i in images], [i[m]["b"] for i in images], axis_label(m), HIGHER_IS_BETTER[m]))
            for m in per_image_metrics], "A vs B per image")
    body += _change_strips(rows_a, by_name_b, per_image_metrics, examples, records)
    primary = primary_metric(per_image_metrics, rows_a)
    if thumbnails and images:
        body.append("<h2>All images</h2><p class=\"note\">A | B; click a pair for its row.</p><div class=\"thumbs\" id=\"thumbnails\">")
        for ra in rows_a:
            rb = by_name_b.get(ra["name"])
            if rb is None:
                continue
            pair = thumbnail(ra.get("restored"), f"A {ra['name']}") + thumbnail(rb.get("restored"), f"B {ra['name']}")
            caption = html.escape(ra["name"])
            if primary is not None:
                d = _difference(ra.get(primary), rb.get(primary))
                klass = _diff_class(primary, d)
                caption += f"<br><span class=\"{klass}\">{LABELS[primary]} B&minus;A {fmt(d)}</span>"
            tip = f"{ra['name']} · A: {metric_values(ra, per_image_metrics)} · B: {metric_values(rb, per_image_metrics)}"
            body.append(thumb_figure(anchors[ra["name"]], pair, caption, tip.replace(" &middot; ", ", ")))
        body.append("</div>")
    body.append("<h2>Per image</h2><p class=\"note\">Click a column header to sort.</p>"
                "<table class=\"sortable\" id=\"per-image\"><thead><tr><th data-key=\"name\">name</th>")
    for m in per_image_metrics:
        body.append(f"<th data-key=\"{m}_a\">{LABELS[m]} A</th><th data-key=\"{m}_b\">{LABELS[m]} B</th>"
                    f"<th data-key=\"{m}_diff\">{LABELS[m]} B&minus;A</th>")
    body.append("</tr></thead><tbody>")
    for item in images:
        cells = "".join(cell(item[m]["a"]) + cell(item[m]["b"]) + cell(item[m]["b_minus_a"], cls=_diff_class(m, item[m]["b_minus_a"]))
                        for m in per_image_metrics)
        body.append(f"<tr id=\"{anchors[item['name']]}\"><td data-v=\"{html.escape(item['name'])}\">{html.escape(item['name'])}</td>{cells}</tr>")
    body.append("</tbody></table>")
    if records:
        extra = [(f"{LABELS[m]} B&minus;A", {i["name"]: i[m]["b_minus_a"] for i in images}) for m in per_image_metrics]
        body.append("<h2>Degradation parameters</h2><p class=\"note\">As sampled by <code>daefr make-testset</code> "
                    "for each LQ image (params/NAME.json).</p>")
        body.append(params_table([i["name"] for i in images], records, anchors, extra))
    _atomic_write(paths["json"], json.dumps(result, indent=2) + "\n")
    _atomic_write(paths["html"], page(title, body))
    return paths
