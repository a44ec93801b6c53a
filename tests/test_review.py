"""``ctmorph review``: the growth-plate review page, in Python and in a real browser.

The fixtures are written by hand (a ``morphometry.csv`` and small PNG sections with known
``row_sections``), never by the pipeline. The browser tests drive Debian's Chromium through
Selenium and its ChromeDriver (``make test`` installs both as root); they skip, saying why,
where the browser, the driver or Selenium is not installed.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from ctmorph.cli import cli
from ctmorph.review import (
    REVIEW_PAGE,
    ReviewScan,
    content_security_policy,
    load_review,
    render_review,
    review_order,
    write_review,
)
from ctmorph.textsafe import csv_cell, csv_uncell

# A scan name a spreadsheet would run as a formula, with markup, quotes and a comma (no "/":
# it is a folder name too).
HOSTILE = '=HYPERLINK("e","x")<img src=x onerror=alert(1)>,y'
HOSTILE_GROUP = "<script>alert(2)</script>"
HOSTILE_ERROR = "growth plate not found: <b>no plate</b> & </div><script>alert(3)</script>"

COLUMNS = ["scan", "group", "status", "error", "ref_slice", "voi_first_slice",
           "voi_last_slice", "plate_confidence", "qc_flags", "voi_source", "distal_end",
           "BV/TV"]


@dataclass
class Scan:
    """One fixture scan: its row and its views (name -> (width, row_sections))."""

    name: str
    group: str = "sham"
    status: str = "ok"
    error: str = ""
    ref: float | None = None
    voi: tuple[float, float] | None = None
    conf: float | None = None
    flags: str = ""
    source: str = "auto"
    views: dict[str, tuple[int, list[float]]] = field(default_factory=dict)


def _rows(first: float, step: float, n: int) -> list[float]:
    return [first + step * i for i in range(n)]


SCANS = [
    Scan("sham_10", conf=0.95, ref=130, voi=(140, 155),
         views={"coronal": (80, _rows(100, 1, 60)), "sagittal": (50, _rows(100, 1, 60))}),
    # taller than the display: shown smaller until "full size"
    Scan("sham_2", conf=0.95, ref=130, voi=(140, 155),
         views={"coronal": (80, _rows(0, 1, 600)), "sagittal": (50, _rows(0, 1, 600))}),
    # descending, non-integer section numbers (a scan resampled along a tilted axis)
    Scan("ovx_low", group="OVX", conf=0.30, ref=480, voi=(470, 460), flags="VOI short",
         views={"coronal": (80, _rows(500, -0.75, 60)),
                "sagittal": (60, _rows(500, -0.75, 60))}),
    Scan("failed_b", group="OVX", status="failed", error=HOSTILE_ERROR, source="",
         views={"coronal": (70, _rows(10, 1, 50)), "sagittal": (70, _rows(10, 1, 50))}),
    Scan("failed_a", group="OVX", status="failed", error="blank reconstruction", source=""),
    Scan(HOSTILE, group=HOSTILE_GROUP, ref=215, voi=(220, 230), flags="<b>x</b>; =1+1",
         source="manual ref",
         views={"coronal": (64, _rows(200, 1, 40)), "sagittal": (64, _rows(200, 1, 40))}),
    Scan("old_run", conf=0.5, ref=30, voi=(40, 50)),
    # wider than tall
    Scan("mid", conf=0.5, ref=25, voi=(30, 36),
         views={"coronal": (200, _rows(0, 1, 40)), "sagittal": (160, _rows(0, 1, 40))}),
]

#: The order the page promises: failed (by name), unknown confidence, confidence ascending,
#: then name in natural order (sham_2 before sham_10).
EXPECTED_ORDER = ["failed_a", "failed_b", HOSTILE, "ovx_low", "mid", "old_run", "sham_2",
                  "sham_10"]


def _section_png(path: Path, width: int, height: int) -> None:
    """A grey picture with a bright band every 10 rows, so the rows are visible."""
    y, x = np.mgrid[0:height, 0:width]
    im = (40 + 120 * x / max(width - 1, 1)).astype(np.uint8)
    im[(y % 10) == 0] = 230
    Image.fromarray(im, mode="L").save(path, format="PNG")


def _cell(value: object) -> object:
    if value is None:
        return ""
    return csv_cell(value) if isinstance(value, str) else value


def write_study(out: Path, scans: list[Scan] = SCANS) -> Path:
    """``out/morphometry.csv`` (text cells through csv_cell, as ``analyze`` writes them) and
    each scan's ``qc/review.json`` with its PNGs."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "morphometry.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(COLUMNS)
        for s in scans:
            first, last = s.voi if s.voi else (None, None)
            w.writerow([_cell(v) for v in (
                s.name, s.group, s.status, s.error, s.ref, first, last, s.conf, s.flags,
                s.source, "first" if s.status == "ok" else "", 12.5 if s.status == "ok" else None)])
    for s in scans:
        qc = out / s.name / "qc"
        if s.status == "ok" and not s.views:  # an older run: QC pictures, no review.json
            qc.mkdir(parents=True)
            _section_png(qc / "longitudinal.png", 20, 30)
        if not s.views:
            continue
        qc.mkdir(parents=True)
        views = []
        for name, (width, rows) in s.views.items():
            _section_png(qc / f"{name}.png", width, len(rows))
            views.append({"name": name, "image": f"{name}.png", "row_sections": rows,
                          "mm_per_px": 0.05})
        (qc / "review.json").write_text(json.dumps({"views": views, "distal_end": "first"}))
    return out


@pytest.fixture
def study(tmp_path: Path) -> Path:
    return write_study(tmp_path / "out")


class _Page(HTMLParser):
    """Every start tag with its attributes, and the text of <script>, <style> and spans."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.raw: dict[str, list[str]] = {"script": [], "style": []}
        self._in: str | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag in self.raw:
            self._in = tag
            self.raw[tag].append("")

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in:
            self.raw[self._in][-1] += data
        else:
            self.text.append(data)


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    p.close()
    return p


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


# -------------------------------------------------------------------------------------------
# Python: order, escaping, CSP, missing sections


def _save_overrides(d, downloads: Path) -> Path:
    """Click "Save overrides.csv" and wait (up to 5 s) for the download to finish."""
    save = d.find_element("id", "save")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", save)
    save.click()
    target = downloads / "overrides.csv"
    for _ in range(100):
        if target.is_file() and not list(downloads.glob("*.crdownload")):
            break
        time.sleep(0.05)
    return target


def test_scans_least_confident_first(study):
    assert [s.scan for s in load_review(study)] == EXPECTED_ORDER
    # and the sort itself, independent of file order
    shuffled = [ReviewScan("b", status="ok", plate_confidence=0.1),
                ReviewScan("z", status="failed"), ReviewScan("a", status="ok"),
                ReviewScan("c", status="ok", plate_confidence=0.1),
                ReviewScan("F10", status="ok", plate_confidence=0.05),
                ReviewScan("F9", status="ok", plate_confidence=0.05),
                ReviewScan("y", status="failed", plate_confidence=0.9)]
    assert [s.scan for s in review_order(shuffled)] == ["y", "z", "a", "F9", "F10", "b", "c"]


def test_rows_and_texts_read_back(study):
    scans = {s.scan: s for s in load_review(study)}
    low = scans["ovx_low"]
    assert (low.ref_slice, low.voi_first_slice, low.voi_last_slice) == (480, 470, 460)
    assert low.plate_confidence == pytest.approx(0.30)
    assert [v.name for v in low.views] == ["coronal", "sagittal"]
    assert low.views[0].row_sections == tuple(_rows(500, -0.75, 60))
    assert (low.views[0].width, low.views[0].height) == (80, 60)
    hostile = scans[HOSTILE]  # csv_cell's quote was undone: the name as the scan has it
    assert (hostile.group, hostile.qc_flags, hostile.voi_source) == (
        HOSTILE_GROUP, "<b>x</b>; =1+1", "manual ref")
    assert hostile.plate_confidence is None and hostile.distal_end == "first"
    assert scans["failed_b"].error == HOSTILE_ERROR and scans["failed_b"].failed


def test_hostile_text_is_escaped(study):
    page = render_review(load_review(study))
    for raw in (HOSTILE, HOSTILE_GROUP, HOSTILE_ERROR, "<b>x</b>", "<img src=x"):
        assert raw not in page
    parsed = _parse(page)
    # no markup came from the input: only the page's own tags and attributes
    assert not [(t, a) for t, attrs in parsed.tags for a in attrs if a.startswith("on")]
    assert not [t for t, a in parsed.tags if "style" in a]
    imgs = [a for t, a in parsed.tags if t == "img"]
    assert len(imgs) == 2 * 6 and all(a["src"].startswith("data:image/png;base64,")
                                      for a in imgs)
    assert [t for t, _ in parsed.tags].count("script") == 1
    # ... and the texts read exactly as they are
    sections = [a for t, a in parsed.tags if t == "section"]
    assert [a["data-scan"] for a in sections] == EXPECTED_ORDER
    text = "".join(parsed.text)
    for raw in (HOSTILE, HOSTILE_GROUP, HOSTILE_ERROR, "<b>x</b>; =1+1"):
        assert raw in text


def test_csp_allows_exactly_the_inline_script_and_style(study):
    page = render_review(load_review(study))
    parsed = _parse(page)
    metas = [a for t, a in parsed.tags
             if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert len(metas) == 1
    csp = metas[0]["content"]
    (script,), (style,) = parsed.raw["script"], parsed.raw["style"]
    assert csp == content_security_policy(script, style)
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";")}
    assert directives["script-src"] == [_sha256(script)]
    assert directives["style-src"] == [_sha256(style)]
    for name in ("default-src", "connect-src", "form-action", "base-uri"):
        assert directives[name] == ["'none'"], name
    assert directives["img-src"] == ["data:"]
    assert "unsafe" not in csp
    # the policy comes before the script and the style it governs
    assert page.index("Content-Security-Policy") < page.index("<style>") < page.index("<script>")


def test_scan_without_sections_is_listed_with_a_note(study):
    scans = {s.scan: s for s in load_review(study)}
    for name in ("failed_a", "old_run"):
        assert scans[name].views == () and "no sections available" in scans[name].note
    page = render_review(list(scans.values()))
    block = page[page.index('data-scan="failed_a"'):page.index('data-scan="failed_b"')]
    assert "blank reconstruction" in block and "no sections available" in block
    assert "<figure" not in block


def test_unusable_view_says_why(tmp_path):
    out = write_study(tmp_path / "out", [
        Scan("a", conf=0.5, views={"coronal": (30, _rows(0, 1, 20)),
                                   "sagittal": (30, _rows(0, 1, 20))})])
    qc = out / "a" / "qc"
    info = json.loads((qc / "review.json").read_text())
    info["views"][0]["row_sections"] = _rows(0, 1, 19)  # one short
    info["views"][1]["image"] = "../../morphometry.csv"  # outside qc/: never read
    info["views"].append({"name": "axial", "image": "coronal.png", "row_sections": "x"})
    (qc / "review.json").write_text(json.dumps(info))
    (scan,) = load_review(out)
    assert [v.problem for v in scan.views] == [
        "coronal.png has 20 rows but row_sections lists 19 sections",
        "image '../../morphometry.csv' not found in qc/",
        "row_sections is not a list of section numbers"]
    page = render_review([scan])
    assert "<figure" not in page and "section not shown" in page
    (qc / "review.json").write_text("{not json")
    (scan,) = load_review(out)
    assert scan.views == () and "review.json unreadable" in scan.note


def test_old_table_without_review_columns(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "morphometry.csv").write_text("scan,group,status\nF1,sham,ok\nF2,,failed\n")
    scans = load_review(out)
    assert [s.scan for s in scans] == ["F2", "F1"]
    assert scans[1].plate_confidence is None and scans[1].ref_slice is None
    assert "F1" in render_review(scans)


def test_cli_writes_the_page(study, tmp_path):
    result = CliRunner().invoke(cli, ["review", str(study)])
    assert result.exit_code == 0, result.output
    page = (study / REVIEW_PAGE).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "Save overrides.csv" in page
    assert write_review(study) == study / REVIEW_PAGE
    missing = CliRunner().invoke(cli, ["review", str(tmp_path / "nothing")])
    assert missing.exit_code == 1 and "morphometry.csv: not found" in missing.output


# -------------------------------------------------------------------------------------------
# In Chromium: offline, no console error, the order, the lines, a click saved as a CSV

CHROMIUM = Path(os.environ.get("CTMORPH_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("CTMORPH_CHROMEDRIVER", "/usr/bin/chromedriver"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1400,1000"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium under ChromeDriver, with the browser and performance logs on."""
    for path, what in ((CHROMIUM, "Chromium"), (CHROMEDRIVER, "ChromeDriver")):
        if not (path.is_file() and os.access(path, os.X_OK)):
            pytest.skip(f"{what} is not installed at {path} (Debian packages chromium and "
                        "chromium-driver; 'make test' installs them as root)")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="Selenium is not installed (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    # an explicit driver path: Selenium Manager (which would download a driver) never runs
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@dataclass
class Loaded:
    """A page opened in the browser, and what happened while it was open."""

    driver: object
    url: str

    def network(self) -> list[str]:
        """Every URL the browser requested since the page was opened (CDP Network events
        from the performance log), the page itself included."""
        urls = []
        for entry in self.driver.get_log("performance"):
            msg = json.loads(entry["message"])["message"]
            if not msg["method"].startswith("Network."):
                continue
            params = msg.get("params", {})
            url = params.get("request", {}).get("url") or params.get("url")
            if url:
                urls.append(url)
        return urls

    def problems(self) -> list[str]:
        """Console errors and warnings (uncaught exceptions and CSP violations among them),
        and every CSP violation the page saw."""
        logged = [f"{e['level']}: {e['message']}" for e in self.driver.get_log("browser")
                  if e["level"] in ("SEVERE", "WARNING")
                  or "Content Security Policy" in e["message"]]
        seen = self.driver.execute_script("return window.__violations || []")
        return logged + [f"CSP violation: {v}" for v in seen]


_VIOLATION_LISTENER = """
window.__violations = [];
document.addEventListener('securitypolicyviolation', function (e) {
  window.__violations.push(e.violatedDirective + ' ' + e.blockedURI);
});
"""


def _open(driver, page: Path) -> Loaded:
    driver.get("about:blank")
    driver.get_log("performance"), driver.get_log("browser")  # drain what came before
    driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                           {"source": _VIOLATION_LISTENER})
    driver.get(page.as_uri())
    for _ in range(100):
        if driver.execute_script("return document.body.getAttribute('data-ready')") == "1":
            break
        time.sleep(0.05)
    else:
        raise AssertionError("the page's script never finished")
    return Loaded(driver, page.as_uri())


@pytest.fixture
def opened(browser, study):
    return _open(browser, write_review(study))


def test_page_is_offline_and_clean(browser, opened, tmp_path):
    urls = opened.network()
    assert opened.url in urls  # the log does see requests
    others = [u for u in urls if u != opened.url and not u.startswith(("data:", "blob:"))]
    assert others == [], "requests besides the file itself"
    assert opened.problems() == []
    # the detector works: a script the policy does not allow is reported
    control = tmp_path / "control.html"
    control.write_text(f'<html><head><meta http-equiv="Content-Security-Policy" '
                       f'content="{content_security_policy("", "")}"></head>'
                       "<body><script>document.title='ran'</script></body></html>")
    browser.get(control.as_uri())
    assert browser.title != "ran"
    assert any("Content Security Policy" in p for p in Loaded(browser, "").problems())


def _box(driver, element) -> dict:
    return driver.execute_script(
        "var r = arguments[0].getBoundingClientRect();"
        "return {top: r.top, left: r.left, width: r.width, height: r.height};", element)


def _view(driver, scan: str, view: str):
    k = EXPECTED_ORDER.index(scan)
    return driver.find_element("css selector", f'#scan-{k} figure[data-view="{view}"]')


def test_order_and_lines_at_their_rows(opened):
    d = opened.driver
    names = [e.text for e in d.find_elements("css selector", "section.scan h2 .name")]
    assert names == EXPECTED_ORDER
    # ovx_low: rows show 500 - 0.75 i; the reference 480 is nearest row 27 (479.75), the VOI
    # 470..460 covers rows 40 (470) to 53 (460.25)
    view = _view(d, "ovx_low", "coronal")
    img = view.find_element("css selector", "img")
    box = _box(d, img)
    scale = box["height"] / 60
    assert box["width"] / 80 == pytest.approx(scale)  # the aspect ratio is kept
    ref = view.find_element("css selector", ".ref")
    assert ref.is_displayed() and ref.text == "ref 480"
    assert _box(d, ref)["top"] + 1 == pytest.approx(box["top"] + 27.5 * scale, abs=1.0)
    voi = _box(d, view.find_element("css selector", ".voi"))
    assert voi["top"] == pytest.approx(box["top"] + 40 * scale, abs=1.0)
    assert voi["height"] == pytest.approx(14 * scale, abs=1.0)
    # the wide image of "mid" keeps its shape too, and both its sections share one scale
    wide = _box(d, _view(d, "mid", "coronal").find_element("css selector", "img"))
    assert wide["width"] / wide["height"] == pytest.approx(200 / 40, rel=0.01)
    assert _box(d, _view(d, "mid", "sagittal").find_element("css selector", "img"))[
        "height"] == pytest.approx(wide["height"])
    # a tall section is shown smaller, and at one row per pixel on "full size"
    tall = _view(d, "sham_2", "coronal").find_element("css selector", "img")
    assert _box(d, tall)["height"] < 600
    zoom = d.find_element("css selector", f"#scan-{EXPECTED_ORDER.index('sham_2')} .zoom")
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", zoom)
    zoom.click()
    assert (_box(d, tall)["width"], _box(d, tall)["height"]) == (80, 600)


def _click_row(driver, scan: str, view: str, row: int, column: int = 10) -> None:
    """Click the middle of natural pixel (row, column) of a scan's section."""
    from selenium.webdriver.common.action_chains import ActionChains

    img = _view(driver, scan, view).find_element("css selector", "img")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
    box = _box(driver, img)
    w, h = driver.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]",
                                 img)
    x = (column + 0.5) * box["width"] / w - box["width"] / 2
    y = (row + 0.5) * box["height"] / h - box["height"] / 2
    ActionChains(driver).move_to_element_with_offset(img, round(x), round(y)).click().perform()


def test_clicks_saved_as_overrides_csv(opened, tmp_path):
    d = opened.driver
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    d.execute_cdp_cmd("Browser.setDownloadBehavior",
                      {"behavior": "allow", "downloadPath": str(downloads)})
    # ovx_low, coronal row 23: section 500 - 0.75 * 23 = 482.75, saved as 483
    _click_row(d, "ovx_low", "coronal", 23)
    fix = _view(d, "ovx_low", "coronal").find_element("css selector", ".fix")
    assert fix.text == "corrected: 483"
    img_box = _box(d, _view(d, "ovx_low", "coronal").find_element("css selector", "img"))
    assert _box(d, fix)["top"] + 1 == pytest.approx(img_box["top"] + 23.5 * img_box["height"]
                                                    / 60, abs=1.0)
    # drawn in the other section of the scan too, at the row of the same section
    assert _view(d, "ovx_low", "sagittal").find_element("css selector", ".fix").text == \
        "corrected: 483"
    # a second click replaces the first; undo takes the last one back
    _click_row(d, "sham_10", "sagittal", 5)
    _click_row(d, "sham_10", "coronal", 20)
    _click_row(d, "mid", "coronal", 3, column=150)
    d.find_element("css selector", f"#scan-{EXPECTED_ORDER.index('mid')} .undo").click()
    _click_row(d, HOSTILE, "sagittal", 7)
    # a failed scan whose plate was not found gets its reference by hand
    _click_row(d, "failed_b", "coronal", 44)
    assert d.find_element("id", "count").text == "4 scans corrected"
    assert opened.problems() == []

    target = _save_overrides(d, downloads)
    text = target.read_text(encoding="utf-8")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0] == ["scan", "ref_slice"]
    # one row per corrected scan, in the page's order, the name as morphometry.csv has it
    assert [(csv_uncell(s), r) for s, r in rows[1:]] == [
        ("failed_b", "54"), (HOSTILE, "207"), ("ovx_low", "483"), ("sham_10", "120")]
    assert rows[2][0] == csv_cell(HOSTILE) and rows[2][0].startswith("'=")
    assert text.startswith("scan,ref_slice\n")
    assert all(math.isfinite(float(r)) and r.isdigit() for _, r in rows[1:])
    assert [u for u in opened.network()
            if u != opened.url and not u.startswith(("data:", "blob:"))] == []



# ---------------------------------------------------------------------------------------------
# the round trip on real analyses: analyze -> review.html -> click -> overrides.csv ->
# analyze --overrides


def test_round_trip_click_to_corrected_analysis(browser, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains

    from ctmorph.io.writer import write_nrecon_folder
    from ctmorph.phantoms.femur import make_femur

    scans = tmp_path / "scans"
    f = make_femur(group="sham", seed=1, voxel_um=12.0, shape_yx=(128, 128), length_mm=2.6)
    write_nrecon_folder(scans / "F1", f.grey, voxel_size_um=12.0, first_section=100)
    g = make_femur(group="sham", seed=3, voxel_um=12.0, shape_yx=(128, 128), length_mm=3.6)
    write_nrecon_folder(scans / "shaft", g.grey[g.ref_index + 60:], voxel_size_um=12.0,
                        first_section=100)  # no growth plate in it
    out = tmp_path / "out"
    args = ["analyze", str(scans), "--group", "g", "-o", str(out), "--jobs", "1",
            "--roi-offset-mm", "0.5", "--roi-height-mm", "1.0", "--distal-end", "first"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 1
    # the shaft has no plate: either none is found or the one found leaves no room for the VOI
    assert re.search(r"shaft: (no growth plate found|scan ends .* proximal of the growth plate)",
                     first.output), first.output
    res = CliRunner().invoke(cli, ["review", str(out)])
    assert res.exit_code == 0, res.output
    opened = _open(browser, out / REVIEW_PAGE)
    d = opened.driver
    names = [e.text for e in d.find_elements("css selector", "section.scan h2 .name")]
    assert names == ["shaft", "F1"]  # the failed scan first
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    d.execute_cdp_cmd("Browser.setDownloadBehavior",
                      {"behavior": "allow", "downloadPath": str(downloads)})
    img = d.find_element("css selector", '#scan-0 figure[data-view="coronal"] img')
    d.execute_script("arguments[0].scrollIntoView({block: 'center'})", img)
    box = _box(d, img)
    h = d.execute_script("return arguments[0].naturalHeight", img)
    row = 12  # image row 12 is section 112 of the shaft scan
    y = (row + 0.5) * box["height"] / h - box["height"] / 2
    ActionChains(d).move_to_element_with_offset(img, 0, round(y)).click().perform()
    target = _save_overrides(d, downloads)
    assert target.read_text() == "scan,ref_slice\nshaft,112\n"
    assert opened.problems() == []
    again = CliRunner().invoke(cli, [*args, "--overrides", str(target)])
    assert again.exit_code == 0, again.output
    assert "1 unchanged and reused" in again.output  # F1 untouched
    import pandas as pd

    rows = pd.read_csv(out / "morphometry.csv").set_index("scan")
    assert rows.loc["shaft", "status"] == "ok" and rows.loc["shaft", "ref_slice"] == 112
    assert rows.loc["shaft", "voi_source"] == "manual ref"
    assert rows.loc["F1", "voi_source"] == "auto"
