"""The review page ``OUT/review.html``: check and correct each femur's growth-plate reference.

After ``ctmorph analyze``, a person looks at every scan's automatic growth-plate reference and
VOI on two orthogonal longitudinal sections (coronal and sagittal), least confident scans
first, and clicks the right section where the automatic one is wrong. The page saves the
corrections as ``overrides.csv`` (``scan,ref_slice``), which ``ctmorph analyze --overrides``
reads.

The page is one self-contained file that works offline: sections are embedded as ``data:``
PNG images, the script and the style are inline and allowed by their SHA-256 hashes in a
strict Content-Security-Policy (no network of any kind, no other script or style), and every
string from the input (scan names, groups, errors, flags) is HTML-escaped.

Inputs (written by ``ctmorph analyze``):

- ``OUT/morphometry.csv``, read with :func:`ctmorph.report.data.load_results`; the columns
  ``group, status, error, ref_slice, voi_first_slice, voi_last_slice, plate_confidence,
  qc_flags, voi_source, distal_end`` are used where present.
- ``OUT/<scan>/qc/review.json``: ``{"views": [{"name", "image", "row_sections",
  "mm_per_px"}, ...], "distal_end"}``; ``image`` names a PNG in the same ``qc/`` folder whose
  row ``i`` shows the section numbered ``row_sections[i]``.
"""

from __future__ import annotations

import base64
import hashlib
import html
import io
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ._atomic import atomic_write_text
from .report.data import load_results, qc_pictures
from .report.writers import format_value
from .textsafe import CSV_TRIGGERS

__all__ = [
    "REVIEW_JSON",
    "REVIEW_PAGE",
    "ReviewScan",
    "ReviewView",
    "content_security_policy",
    "load_review",
    "render_review",
    "review_order",
    "write_review",
]

logger = logging.getLogger(__name__)

#: Per-scan description of the sections, in ``OUT/<scan>/qc/``.
REVIEW_JSON = "review.json"
#: The page, in the analysis folder.
REVIEW_PAGE = "review.html"

_NO_SECTIONS = ("no sections available: this run wrote no qc/review.json for this scan "
                "(an older ctmorph, or the scan failed before its sections were made)")


@dataclass(frozen=True)
class ReviewView:
    """One longitudinal section of a scan as the page shows it.

    Attributes
    ----------
    name : str
        ``coronal``, ``sagittal``, ... (from ``review.json``).
    image_uri : str
        The PNG as a ``data:`` URI; empty when the view cannot be shown (see ``problem``).
    width, height : int
        Natural size of the image in pixels; ``height == len(row_sections)``.
    row_sections : tuple of float
        Section number (as the slice files are numbered) of each image row, top row first.
    mm_per_px : float or None
        Pixel size of the image along a row, for the 1 mm scale bar.
    problem : str
        Why the view cannot be shown (image missing, row count wrong, ...); empty when fine.
    """

    name: str
    image_uri: str = ""
    width: int = 0
    height: int = 0
    row_sections: tuple[float, ...] = ()
    mm_per_px: float | None = None
    problem: str = ""


@dataclass(frozen=True)
class ReviewScan:
    """One scan of the review page: its row of ``morphometry.csv`` and its sections.

    Numbers that are missing (a failed scan, an older run) are ``None``; texts are ``""``.
    """

    scan: str
    group: str = ""
    status: str = ""
    error: str = ""
    plate_confidence: float | None = None
    qc_flags: str = ""
    voi_source: str = ""
    ref_slice: float | None = None
    voi_first_slice: float | None = None
    voi_last_slice: float | None = None
    distal_end: str = ""
    views: tuple[ReviewView, ...] = ()
    note: str = ""

    @property
    def failed(self) -> bool:
        """True for any scan whose status is not ``ok``."""
        return self.status != "ok"


def review_order(scans: Iterable[ReviewScan]) -> list[ReviewScan]:
    """Scans least confident first.

    Parameters
    ----------
    scans : iterable of ReviewScan

    Returns
    -------
    list of ReviewScan
        Failed scans first; then scans whose ``plate_confidence`` is unknown (an older run:
        nothing vouches for their reference); then by ``plate_confidence`` ascending; ties
        by name in natural order (``F2`` before ``F10``), then by the exact name.

    Examples
    --------
    >>> s = [ReviewScan("F10", status="ok", plate_confidence=0.9),
    ...      ReviewScan("F2", status="ok", plate_confidence=0.9),
    ...      ReviewScan("F1", status="ok", plate_confidence=0.2),
    ...      ReviewScan("F9", status="failed")]
    >>> [x.scan for x in review_order(s)]
    ['F9', 'F1', 'F2', 'F10']
    """
    def key(s: ReviewScan) -> tuple:
        if s.failed:
            rank, conf = 0, 0.0
        elif s.plate_confidence is None:
            rank, conf = 1, 0.0
        else:
            rank, conf = 2, s.plate_confidence
        return rank, conf, _natural_key(s.scan), s.scan

    return sorted(scans, key=key)


def _natural_key(name: str) -> tuple:
    """A sort key in which digit runs compare as numbers (``F2`` < ``F10``), text case-blind."""
    parts = re.split(r"(\d+)", name.casefold())
    return tuple((0, int(p), p) if i % 2 else (1, 0, p) for i, p in enumerate(parts))


def _number(row: Mapping[str, Any], column: str) -> float | None:
    """A finite number from a cell, or None (missing column, empty cell, text)."""
    value = row.get(column)
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):  # text, a list, pandas.NA
        return None
    return v if math.isfinite(v) else None


def _text(row: Mapping[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None or pd.isna(value):
        return ""
    return str(value)


def _png_data_uri(path: Path) -> tuple[str, int, int]:
    """``(data: URI, width, height)`` of a PNG file, embedded byte for byte.

    Raises
    ------
    ValueError
        The file is not a readable PNG.
    """
    from PIL import Image, UnidentifiedImageError

    raw = path.read_bytes()
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.format != "PNG":
                raise ValueError(f"{path.name} is {im.format}, not PNG")
            width, height = im.size
    except UnidentifiedImageError as exc:
        raise ValueError(f"{path.name} is not an image") from exc
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii"), width, height


def _view(spec: object, pictures: Mapping[str, Path], k: int) -> ReviewView:
    """One entry of ``review.json``'s ``views``, checked against its image."""
    if not isinstance(spec, Mapping):
        return ReviewView(f"view {k + 1}", problem="not an object in review.json")
    name = str(spec.get("name") or f"view {k + 1}")
    image = spec.get("image")
    # only the PNGs of the scan's own qc/ folder: a name like "../x.png" matches nothing
    path = pictures.get(image) if isinstance(image, str) else None
    if path is None:
        return ReviewView(name, problem=f"image {image!r} not found in qc/")
    rows = spec.get("row_sections")
    if not isinstance(rows, list) or not rows or not all(
            isinstance(r, int | float) and not isinstance(r, bool) and math.isfinite(r)
            for r in rows):
        return ReviewView(name, problem="row_sections is not a list of section numbers")
    try:
        uri, width, height = _png_data_uri(path)
    except (OSError, ValueError) as exc:
        return ReviewView(name, problem=f"image unreadable ({exc})")
    if height != len(rows):
        return ReviewView(name, problem=f"{image} has {height} rows but row_sections lists "
                                        f"{len(rows)} sections")
    mm = _number(spec, "mm_per_px")
    return ReviewView(name, uri, width, height, tuple(float(r) for r in rows),
                      mm if mm is not None and mm > 0 else None)


def _load_views(out_dir: Path, scan: str) -> tuple[tuple[ReviewView, ...], str, str]:
    """``(views, distal_end, note)`` of one scan from its ``qc/review.json``."""
    pictures = {p.name: p for p in qc_pictures(out_dir, scan)}  # also keeps OUT/<scan> in OUT
    if not pictures:
        return (), "", _NO_SECTIONS
    path = next(iter(pictures.values())).parent / REVIEW_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return (), "", _NO_SECTIONS
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        logger.warning("%s: unreadable (%s)", path, exc)
        return (), "", f"qc/{REVIEW_JSON} unreadable: {exc}"
    specs = data.get("views") if isinstance(data, dict) else None
    if not isinstance(specs, list) or not specs:
        return (), "", f"qc/{REVIEW_JSON} lists no views"
    views = tuple(_view(s, pictures, k) for k, s in enumerate(specs))
    for v in views:
        if v.problem:
            logger.warning("%s: %s view: %s", path, v.name, v.problem)
    distal = data.get("distal_end")
    return views, distal if isinstance(distal, str) else "", ""


def load_review(out_dir: str | Path) -> list[ReviewScan]:
    """Every scan of an analysis folder, with its sections, in review order.

    Parameters
    ----------
    out_dir : str or Path
        Analysis folder written by ``ctmorph analyze``.

    Returns
    -------
    list of ReviewScan
        One per row of ``morphometry.csv``, ordered by :func:`review_order`. A scan without
        ``qc/review.json`` has no views and a ``note`` saying so; a view whose image or
        ``row_sections`` cannot be used carries its ``problem``.

    Raises
    ------
    ConfigError
        ``morphometry.csv`` is missing or unreadable (from
        :func:`~ctmorph.report.data.load_results`).
    """
    out_dir = Path(out_dir)
    df = load_results(out_dir)
    scans = []
    for row in df.to_dict("records"):
        name = _text(row, "scan")
        views, distal, note = _load_views(out_dir, name)
        scans.append(ReviewScan(
            scan=name, group=_text(row, "group"), status=_text(row, "status"),
            error=_text(row, "error"), plate_confidence=_number(row, "plate_confidence"),
            qc_flags=_text(row, "qc_flags"), voi_source=_text(row, "voi_source"),
            ref_slice=_number(row, "ref_slice"), voi_first_slice=_number(row, "voi_first_slice"),
            voi_last_slice=_number(row, "voi_last_slice"),
            distal_end=_text(row, "distal_end") or distal, views=views, note=note))
    return review_order(scans)


# ---------------------------------------------------------------------------------------------
# The page

def _sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode(
        "ascii") + "'"


def content_security_policy(script: str, style: str) -> str:
    """The page's Content-Security-Policy: nothing but its own inline script and style.

    Parameters
    ----------
    script, style : str
        The exact text of the page's one ``<script>`` and one ``<style>`` element.

    Returns
    -------
    str
        ``default-src 'none'`` (no fetch, frame, font, media, object or worker), images only
        from ``data:``, the script and the style allowed by their SHA-256 hashes (no
        ``'unsafe-inline'``), ``connect-src 'none'``, ``form-action 'none'`` and
        ``base-uri 'none'``. Downloads from a ``blob:`` link are not resource loads, so
        saving ``overrides.csv`` works under it.
    """
    return ("default-src 'none'; img-src data:; "
            f"style-src {_sha256_source(style)}; script-src {_sha256_source(script)}; "
            "connect-src 'none'; form-action 'none'; base-uri 'none'")


_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;margin:0;
 color:#1b1b1b;line-height:1.4}
header.top{position:sticky;top:0;z-index:5;background:#fff;border-bottom:1px solid #ccc;
 padding:8px 20px;display:flex;flex-wrap:wrap;gap:8px 18px;align-items:center}
header.top h1{font-size:1.2em;margin:0}
header.top .help{color:#555;font-size:.86em;flex-basis:100%}
main{padding:0 20px 40px}
button{font:inherit;padding:3px 10px;cursor:pointer}
button:disabled{cursor:default}
#save{font-weight:600}
section.scan{border:1px solid #d4d4d4;border-radius:4px;margin:14px 0;padding:8px 12px}
section.scan.failed{border-color:#d9534f}
section.scan.fixed{border-color:#f08c00;box-shadow:0 0 0 2px #ffd8a8}
section.scan h2{font-size:1.05em;margin:0 0 4px}
.rank{color:#777;font-weight:400;margin-right:.4em}
.facts{font-size:.86em;color:#333;display:flex;flex-wrap:wrap;gap:2px 16px;margin:0 0 6px}
.facts b{font-weight:600}
.error{background:#fff4f0;border-left:4px solid #d9534f;padding:3px 8px;margin:4px 0;
 font-size:.9em;white-space:pre-wrap}
.note{background:#f4f8ff;border-left:4px solid #4a78c2;padding:3px 8px;margin:4px 0;
 font-size:.9em}
.views{display:flex;flex-wrap:wrap;gap:14px;align-items:flex-start}
.zoomed .views{flex-wrap:nowrap;overflow-x:auto}
figure.view{margin:0}
figure.view figcaption{font-size:.82em;color:#444}
.frame{position:relative;display:inline-block;line-height:0;cursor:crosshair;
 background:#000;user-select:none}
.frame img{display:block;max-height:420px;max-width:44vw}
.mark{position:absolute;left:0;right:0;pointer-events:none;line-height:1.2}
.mark span{position:absolute;font-size:11px;padding:0 3px;white-space:nowrap;
 background:rgba(255,255,255,.85)}
.ref{border-top:2px solid #e03131;margin-top:-1px}.ref span{left:2px;top:-15px;color:#c92a2a}
.fix{border-top:2px solid #f76707;margin-top:-1px}.fix span{right:2px;top:2px;color:#d9480f;
 font-weight:600}
.hover{border-top:1px dashed #ffec99;margin-top:-1px}.hover span{right:2px;top:-15px;
 color:#5c4400}
.voi{box-sizing:border-box;background:rgba(51,102,255,.28);border-top:1px solid #4c6ef5;
 border-bottom:1px solid #4c6ef5}
.scalebar{position:absolute;bottom:6px;left:6px;height:0;border-top:3px solid #fff;
 pointer-events:none}.scalebar span{position:absolute;left:0;bottom:4px;color:#fff;
 font-size:11px;line-height:1.2;text-shadow:0 0 2px #000}
.actions{margin-top:6px;font-size:.9em;display:flex;gap:12px;align-items:center}
.fixtext{color:#d9480f;font-weight:600}
.problem{color:#c92a2a;font-size:.86em;line-height:1.3;max-width:40em}
[hidden]{display:none!important}
"""

# The page's behaviour. Section numbers map to image rows through each view's row_sections
# (row i shows section row_sections[i], top row first); a click maps the clicked CSS pixel
# back to the natural image row, so the display scale never changes the section saved.
_SCRIPT_TEMPLATE = r"""
(function () {
  "use strict";
  var TRIGGERS = __TRIGGERS__;
  var TARGET_HEIGHT = 420;
  var scans = Array.prototype.slice.call(document.querySelectorAll("section.scan"));
  var fixes = scans.map(function () { return []; });  // per scan, corrections in order
  var unsaved = false;

  function fmt(x) { return Number.isInteger(x) ? String(x) : x.toFixed(1); }
  function rowsOf(view) { return JSON.parse(view.getAttribute("data-rows")); }

  // the mean distance of two rows' sections (1 for a one-row image)
  function stepOf(rows) {
    var n = rows.length;
    return n > 1 && rows[n - 1] !== rows[0] ? Math.abs(rows[n - 1] - rows[0]) / (n - 1) : 1;
  }

  // the nearest image row showing section s, or -1 when s lies outside the image
  function rowOf(rows, s) {
    var n = rows.length, step = stepOf(rows);
    var lo = Math.min(rows[0], rows[n - 1]), hi = Math.max(rows[0], rows[n - 1]);
    if (s < lo - step / 2 || s > hi + step / 2) { return -1; }
    var best = 0;
    for (var i = 1; i < n; i++) {
      if (Math.abs(rows[i] - s) < Math.abs(rows[best] - s)) { best = i; }
    }
    return best;
  }

  function pct(x, n) { return (100 * x / n) + "%"; }

  function place(mark, row, n, label) {
    if (row < 0) { mark.hidden = true; return; }
    mark.style.top = pct(row + 0.5, n);
    mark.firstChild.textContent = label;
    mark.hidden = false;
  }

  function drawStatic(scan, view) {
    var rows = rowsOf(view), n = rows.length;
    var ref = parseFloat(scan.getAttribute("data-ref"));
    var first = parseFloat(scan.getAttribute("data-voi-first"));
    var last = parseFloat(scan.getAttribute("data-voi-last"));
    if (!isNaN(ref)) { place(view.querySelector(".ref"), rowOf(rows, ref), n, "ref " + fmt(ref)); }
    if (!isNaN(first) && !isNaN(last)) {  // the rows whose sections lie in the VOI
      var lo = Math.min(first, last), hi = Math.max(first, last), tol = stepOf(rows) / 2;
      var a = -1, b = -1, band = view.querySelector(".voi");
      rows.forEach(function (s, i) {
        if (s >= lo - tol && s <= hi + tol) { if (a < 0) { a = i; } b = i; }
      });
      if (a >= 0) {
        band.style.top = pct(a, n);
        band.style.height = pct(b - a + 1, n);
        band.hidden = false;
      }
    }
    var mm = parseFloat(view.getAttribute("data-mm-per-px"));
    var w = parseInt(view.getAttribute("data-width"), 10);
    if (mm > 0 && 1 / mm < 0.8 * w) {
      var bar = view.querySelector(".scalebar");
      bar.style.width = pct(1 / mm, w);
      bar.hidden = false;
    }
  }

  function current(k) { var h = fixes[k]; return h.length ? h[h.length - 1] : null; }

  function drawFix(k) {
    var scan = scans[k], s = current(k);
    scan.querySelectorAll("figure.view").forEach(function (view) {
      var mark = view.querySelector(".fix");
      if (s === null) { mark.hidden = true; return; }
      var rows = rowsOf(view);
      place(mark, rowOf(rows, s), rows.length, "corrected: " + s);
    });
    scan.querySelector(".fixtext").textContent = s === null ? "" : "corrected: " + s;
    scan.querySelector(".undo").disabled = fixes[k].length === 0;
    scan.classList.toggle("fixed", s !== null);
    var count = fixes.filter(function (h) { return h.length > 0; }).length;
    document.getElementById("count").textContent =
      count === 1 ? "1 scan corrected" : count + " scans corrected";
  }

  // the natural image row under a mouse event, from the image's displayed box
  function rowAt(img, event) {
    var box = img.getBoundingClientRect();
    var n = img.naturalHeight || parseInt(img.getAttribute("height"), 10);
    var row = Math.floor((event.clientY - box.top) / box.height * n);
    return Math.min(Math.max(row, 0), n - 1);
  }

  // one display scale per scan, so that its sections' rows line up side by side
  function layout() {
    scans.forEach(function (scan) {
      var views = Array.prototype.slice.call(scan.querySelectorAll("figure.view"));
      var room = Math.max(200, (scan.clientWidth - 40) / Math.max(views.length, 1) - 14);
      var size = function (view, name) { return parseInt(view.getAttribute(name), 10); };
      var f = Math.min.apply(null, views.map(function (view) {
        return Math.min(TARGET_HEIGHT / size(view, "data-height"),
                        room / size(view, "data-width"));
      }));
      if (scan.classList.contains("zoomed")) { f = Math.max(f, 1); }  // a row per pixel
      views.forEach(function (view) {
        var img = view.querySelector("img");
        var w = size(view, "data-width"), h = size(view, "data-height");
        img.style.maxWidth = "none"; img.style.maxHeight = "none";
        img.style.width = (w * f) + "px"; img.style.height = (h * f) + "px";
        img.style.imageRendering = f >= 2 ? "pixelated" : "auto";
      });
    });
  }

  scans.forEach(function (scan, k) {
    scan.querySelectorAll("figure.view").forEach(function (view) {
      var rows = rowsOf(view), img = view.querySelector("img");
      var frame = view.querySelector(".frame"), hover = view.querySelector(".hover");
      drawStatic(scan, view);
      frame.addEventListener("click", function (event) {
        var section = Math.round(rows[rowAt(img, event)]);
        var h = fixes[k];
        if (h.length === 0 || h[h.length - 1] !== section) { h.push(section); }
        unsaved = true;
        drawFix(k);
      });
      frame.addEventListener("mousemove", function (event) {
        var row = rowAt(img, event);
        place(hover, row, rows.length, String(Math.round(rows[row])));
      });
      frame.addEventListener("mouseleave", function () { hover.hidden = true; });
    });
    scan.querySelector(".zoom").addEventListener("click", function (event) {
      var zoomed = scan.classList.toggle("zoomed");
      event.target.textContent = zoomed ? "fit" : "full size";
      layout();
    });
    scan.querySelector(".undo").addEventListener("click", function () {
      fixes[k].pop();
      unsaved = true;
      drawFix(k);
    });
  });

  // a text cell as ctmorph.textsafe.csv_cell writes it, then quoted as Python's csv module does
  function csvCell(text) {
    var rest = text.replace(/^'+/, "");
    var cell = rest.length > 0 && TRIGGERS.indexOf(rest.charAt(0)) >= 0 ? "'" + text : text;
    return /[",\r\n]/.test(cell) ? '"' + cell.replace(/"/g, '""') + '"' : cell;
  }

  function overridesCsv() {
    var lines = ["scan,ref_slice"];
    scans.forEach(function (scan, k) {
      var s = current(k);
      if (s !== null) { lines.push(csvCell(scan.getAttribute("data-scan")) + "," + s); }
    });
    return lines.join("\n") + "\n";
  }

  document.getElementById("save").addEventListener("click", function () {
    var blob = new Blob([overridesCsv()], {type: "text/csv;charset=utf-8"});
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = "overrides.csv";
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(link.href); }, 60000);
    unsaved = false;
  });

  window.addEventListener("beforeunload", function (event) {
    if (unsaved) { event.preventDefault(); event.returnValue = ""; }
  });
  window.addEventListener("resize", layout);
  layout();
  document.body.setAttribute("data-ready", "1");
}());
"""

_SCRIPT = _SCRIPT_TEMPLATE.replace(
    "__TRIGGERS__", json.dumps("".join(sorted(CSV_TRIGGERS))))


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _section_label(value: float | None) -> str:
    if value is None:
        return "–"
    return str(int(value)) if value == int(value) else f"{value:.1f}"


def _num_attr(name: str, value: float | None) -> str:
    return "" if value is None else f' data-{name}="{value!r}"'


def _view_html(scan: ReviewScan, view: ReviewView) -> str:
    if view.problem:
        return (f'<div class="problem">{_e(view.name)} section not shown: '
                f"{_e(view.problem)}</div>")
    rows = json.dumps(list(view.row_sections), allow_nan=False)
    mm = _num_attr("mm-per-px", view.mm_per_px)
    mark = '<div class="mark {}" hidden><span></span></div>'
    return (
        f'<figure class="view" data-view="{_e(view.name)}" data-rows="{_e(rows)}" '
        f'data-width="{view.width}" data-height="{view.height}"{mm}>'
        '<div class="frame">'
        f'<img src="{view.image_uri}" width="{view.width}" height="{view.height}" '
        f'alt="{_e(view.name)} section of {_e(scan.scan)}" draggable="false">'
        '<div class="mark voi" hidden></div>'
        + mark.format("ref") + mark.format("fix") + mark.format("hover")
        + '<div class="scalebar" hidden><span>1 mm</span></div>'
        f"</div><figcaption>{_e(view.name)}</figcaption></figure>")


def _scan_html(k: int, s: ReviewScan) -> str:
    conf = format_value(s.plate_confidence) if s.plate_confidence is not None else "–"
    voi = (f"{_section_label(s.voi_first_slice)}–{_section_label(s.voi_last_slice)}"
           if s.voi_first_slice is not None and s.voi_last_slice is not None else "–")
    facts = [("group", s.group), ("status", s.status or "–"), ("plate confidence", conf),
             ("reference", _section_label(s.ref_slice)), ("VOI", voi),
             ("VOI source", s.voi_source or "–"), ("distal end", s.distal_end or "–"),
             ("QC flags", s.qc_flags or "none")]
    attrs = (_num_attr("ref", s.ref_slice) + _num_attr("voi-first", s.voi_first_slice)
             + _num_attr("voi-last", s.voi_last_slice))
    parts = [
        f'<section class="scan{" failed" if s.failed else ""}" id="scan-{k}" '
        f'data-scan="{_e(s.scan)}"{attrs}>',
        f'<h2><span class="rank">{k + 1}.</span><span class="name">{_e(s.scan)}</span></h2>',
        '<div class="facts">' + "".join(f"<span>{_e(a)}: <b>{_e(b)}</b></span>"
                                        for a, b in facts) + "</div>",
    ]
    if s.failed:
        parts.append(f'<div class="error">{_e(s.error or "(no reason recorded)")}</div>')
    if s.note:
        parts.append(f'<div class="note">{_e(s.note)}</div>')
    shown = [v for v in s.views if not v.problem]
    parts.append('<div class="views">' + "".join(_view_html(s, v) for v in s.views) + "</div>")
    parts.append(f'<div class="actions"{"" if shown else " hidden"}><span>Click the growth '
                 "plate in a section to set the reference.</span>"
                 '<span class="fixtext"></span>'
                 '<button type="button" class="undo" disabled>undo</button>'
                 '<button type="button" class="zoom" title="one image row (section) per '
                 'screen pixel">full size</button></div>')
    parts.append("</section>")
    return "\n".join(parts)


def render_review(scans: Sequence[ReviewScan], *, title: str = "ctmorph review") -> str:
    """The whole review page as one string.

    Parameters
    ----------
    scans : sequence of ReviewScan
        In the order to show them (see :func:`review_order`).
    title : str
        The page title (escaped).

    Returns
    -------
    str
        A complete HTML document with one inline ``<style>`` and one inline ``<script>``,
        both allowed by their hashes in the Content-Security-Policy of
        :func:`content_security_policy`.
    """
    n_failed = sum(s.failed for s in scans)
    csp = content_security_policy(_SCRIPT, _STYLE)
    head = (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{_e(csp)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>\n")
    top = (
        '<header class="top"><h1>Growth-plate review</h1>'
        f"<span>{len(scans)} scans ({n_failed} failed), least confident first</span>"
        '<span id="count">0 scans corrected</span>'
        '<button type="button" id="save">Save overrides.csv</button>'
        '<span class="help">Red: the reference section in use; blue: the VOI. Click a '
        "section at the growth plate to set a corrected reference for that scan (orange); "
        "a new click replaces it, undo takes it back. Save overrides.csv and run "
        "<code>ctmorph analyze ... --overrides overrides.csv</code>.</span></header>\n")
    body = "\n".join(_scan_html(k, s) for k, s in enumerate(scans))
    return head + top + "<main>\n" + body + "\n</main>\n<script>" + _SCRIPT + \
        "</script>\n</body></html>\n"


def write_review(out_dir: str | Path) -> Path:
    """Write ``OUT/review.html`` (atomically) for the analysis folder ``out_dir``.

    Parameters
    ----------
    out_dir : str or Path
        Analysis folder written by ``ctmorph analyze``.

    Returns
    -------
    Path
        The page written.

    Raises
    ------
    ConfigError
        ``morphometry.csv`` is missing or unreadable.
    OutputError
        The page cannot be written.
    """
    out_dir = Path(out_dir)
    scans = load_review(out_dir)
    target = out_dir / REVIEW_PAGE
    atomic_write_text(target, render_review(scans, title=f"ctmorph review: {out_dir.name}"))
    return target

