"""HTML building blocks shared by ``report.html`` and ``compare.html``.

Page, tables, image strips,
thumbnail grids, provenance and degradation-parameter tables. Everything is inline (styles, script,
images as data URIs), so a report opens offline and can be mailed as one file.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from daefr.metrics.suite import HIGHER_IS_BETTER, UNITS

LABELS = {"psnr": "PSNR", "ssim": "SSIM", "lpips": "LPIPS", "deg": "Deg", "ids": "IDS", "lmd": "LMD", "niqe": "NIQE", "fid": "FID"}
THUMB_HEIGHT = 72

STYLE = """
body{font-family:system-ui,Segoe UI,Helvetica,Arial,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}
table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f0f0f0}
td:first-child,th:first-child{text-align:left}
table.kv td,table.kv th{text-align:left;vertical-align:top}.wide{overflow-x:auto}table.kv code{white-space:pre-wrap;overflow-wrap:anywhere;display:inline-block}table.kv td:first-child{white-space:nowrap}
table.sortable th{cursor:pointer;user-select:none}table.sortable th:after{content:" \\2195";color:#999}
.better{color:#0a7d22}.worse{color:#b3261e}.note{color:#666;font-size:12px}
.strip{display:flex;gap:6px;align-items:flex-start;margin:6px 0 4px}.example{margin-bottom:14px}.example p.params{margin:0}
.strip figure{margin:0;text-align:center;font-size:12px;max-width:220px}.strip img{display:block;height:128px;width:auto;margin:auto}
.strip figcaption b{display:block;font-size:13px}
.plots{display:flex;flex-wrap:wrap;gap:10px}.plots img{border:1px solid #eee;max-width:100%}
.thumbs{display:flex;flex-wrap:wrap;gap:6px}.thumbs a{color:inherit;text-decoration:none}
.thumbs figure{margin:0;text-align:center;font-size:11px;width:""" + str(THUMB_HEIGHT + 32) + """px}
.thumbs figure.two{width:""" + str(2 * THUMB_HEIGHT + 8) + """px}
.thumbs img{height:""" + str(THUMB_HEIGHT) + """px;width:auto}.thumbs .pair{display:flex;gap:2px;justify-content:center}
.thumbs figcaption{overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
tr:target{background:#fff6c8}
code{background:#f4f4f4;padding:1px 4px}
"""

SORT_JS = """
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


def fmt(value: float | None, digits: int = 4) -> str:
    """A metric value for display: fixed digits, inf/-inf spelled out, None as n/a."""
    if value is None:
        return "n/a"
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}f}"


def fmt_spread(mean: float | None, std: float | None) -> str:
    """``mean ± std`` (the std left out when undefined)."""
    return fmt(mean) if std is None else f"{fmt(mean)} &plusmn; {fmt(std)}"


def cell(value: float | None, digits: int = 4, cls: str = "", text: str | None = None) -> str:
    """A table cell with a numeric ``data-v`` for sorting."""
    sort_value = "" if value is None else ("Infinity" if value == math.inf else repr(float(value)))
    klass = f' class="{cls}"' if cls else ""
    return f'<td data-v="{sort_value}"{klass}>{fmt(value, digits) if text is None else text}</td>'


def header(name: str) -> str:
    """Metric column header: label, better direction arrow, unit."""
    arrow = "&uarr;" if HIGHER_IS_BETTER[name] else "&darr;"
    unit = f" ({UNITS[name]})" if UNITS.get(name) else ""
    return f"{LABELS.get(name, name)} {arrow}{unit}"


def axis_label(name: str) -> str:
    """Metric name and unit for a plot axis."""
    unit = f" ({UNITS[name]})" if UNITS.get(name) else ""
    return f"{LABELS.get(name, name)}{unit}"


def page(title: str, body: Sequence[str]) -> str:
    """The whole HTML document."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        + "\n".join(body)
        + f"\n<script>{SORT_JS}</script>\n</body></html>\n"
    )


def image_uri(image: np.ndarray, height: int = 128, jpeg: bool = False) -> str:
    """An RGB uint8 image (H, W, 3) as a data URI, scaled down to ``height`` when taller."""
    from PIL import Image

    img = Image.fromarray(image)
    if img.height > height:  # smaller images stay native (small file) and are scaled up by the browser
        img = img.resize((max(1, round(img.width * height / img.height)), height), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    if jpeg:
        img.save(buf, format="JPEG", quality=85)
        return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def metric_values(row: Mapping[str, Any] | None, metrics: Sequence[str]) -> str:
    """``PSNR 24.1234 · SSIM 0.8123`` for the metrics the row has."""
    if row is None:
        return ""
    return " &middot; ".join(f"{LABELS.get(m, m)} {fmt(row.get(m))}" for m in metrics if m in row)


def panels(caption: str, items: Sequence[tuple[str, str | None, str]], alt: str, footer: str = "") -> str:
    """A strip of labelled images with an optional footer note.

    One (label, image path, HTML line under the label) per panel; ``footer``
    is an HTML note under the strip (the degradation parameters).
    """
    from daefr.metrics.images import read_rgb8

    figures = []
    for label, path, sub in items:
        if path and Path(path).is_file():
            image = read_rgb8(path)
            size = f"{image.shape[1]}&times;{image.shape[0]} px"
            figures.append(f'<figure class="panel"><img src="{image_uri(image)}" alt="{label} {html.escape(alt)}">'
                           f'<figcaption><b>{label}</b>{size}{"<br>" + sub if sub else ""}</figcaption></figure>')
    note = f'<p class="note params">{footer}</p>' if footer else ""
    return f'<div class="example">{caption}<div class="strip">{"".join(figures)}</div>{note}</div>'


def thumbnail(path: str | None, alt: str) -> str:
    """A small JPEG ``<img>`` of an image file, or an empty string when it cannot be read."""
    from daefr.errors import ImageReadError
    from daefr.metrics.images import read_rgb8

    if not path or not Path(path).is_file():
        return ""
    try:
        uri = image_uri(read_rgb8(path), THUMB_HEIGHT, jpeg=True)
    except (ImageReadError, OSError, ValueError):
        return ""
    return f'<img src="{uri}" alt="{html.escape(alt)}" loading="lazy">'


def thumb_figure(anchor: str, images: str, caption: str, tooltip: str) -> str:
    """One cell of the thumbnail grid, linking to the image's row of the per-image table."""
    klass = "thumb two" if images.count("<img") > 1 else "thumb"
    return (f'<a href="#{anchor}" title="{html.escape(tooltip)}"><figure class="{klass}"><div class="pair">{images}</div>'
            f"<figcaption>{caption}</figcaption></figure></a>")


def provenance_table(columns: Sequence[tuple[str, Mapping[str, Any] | None]], table_id: str = "provenance") -> str:
    """Key/value table of one or more provenance mappings (one column each; None = not recorded)."""
    from daefr.metrics.provenance import ordered_items

    keys: list[str] = []
    for _label, prov in columns:
        for key, _value in ordered_items(prov or {}):
            if key not in keys:
                keys.append(key)
    head = "".join(f"<th>{html.escape(label)}</th>" for label, _ in columns)
    rows = []
    for key in keys:
        cells = "".join(f"<td>{_kv_value((prov or {}).get(key))}</td>" for _label, prov in columns)
        rows.append(f"<tr><td>{html.escape(key.replace('_', ' '))}</td>{cells}</tr>")
    if not keys:
        rows.append(f"<tr><td>provenance</td>{'<td>not recorded</td>' * len(columns)}</tr>")
    return (f'<table class="kv" id="{table_id}"><thead><tr><th>what</th>{head}</tr></thead><tbody>'
            + "".join(rows) + "</tbody></table>")


def _kv_value(value: Any) -> str:
    if value is None:
        return '<span class="note">not recorded</span>'
    if isinstance(value, int) and not isinstance(value, bool) and value >= 10_000:
        return f"{value:,}"
    if isinstance(value, (dict, list)):
        return f"<code>{html.escape(json.dumps(value, separators=(', ', ': ')))}</code>"
    return f"<code>{html.escape(str(value))}</code>"


def params_table(names: Sequence[str], records: Mapping[str, Mapping[str, Any]], anchors: Mapping[str, str],
                 extra: Sequence[tuple[str, Mapping[str, float | None]]] = ()) -> str:
    """Sortable table of each image's degradation parameters, plus ``extra`` (header, name -> value) columns."""
    from daefr.metrics.testset_params import flat_params, format_value, param_columns

    shown = [n for n in names if n in records]
    columns = param_columns([records[n] for n in shown])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "".join(f"<th>{h}</th>" for h, _ in extra)
    rows = []
    for name in shown:
        flat = flat_params(records[name])
        cells = []
        for c in columns:
            value = flat.get(c)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                cells.append(cell(float(value), text=format_value(value)))
            else:
                cells.append(f"<td>{'' if value is None else html.escape(format_value(value))}</td>")
        cells += [cell(values.get(name)) for _h, values in extra]
        link = f'<a href="#{anchors[name]}">{html.escape(name)}</a>' if name in anchors else html.escape(name)
        rows.append(f'<tr><td data-v="{html.escape(name)}">{link}</td>{"".join(cells)}</tr>')
    return ('<div class="wide"><table class="sortable" id="params"><thead><tr><th>name</th>' + head
            + "</tr></thead><tbody>" + "".join(rows) + "</tbody></table></div>")
