"""EVALUATION_REPORT.html and results.json: rendered from rows (escaping, statuses, stable bytes),
then opened in a real headless Chromium (the DOM it built and a screenshot), for rows made up
here and for real demo runs (heavy): a finished one, and one with failed and skipped pairs merged
with it (missing cells)."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import struct
import subprocess
import zlib
from html.parser import HTMLParser
from pathlib import Path

import pytest

from spectravenv import report_html, results_json
from spectravenv.catalog import Benchmark, Catalog
from spectravenv.results import Row

from .conftest import Workspace

# ---- helpers: the browser, its DOM, its screenshot --------------------------------------------


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is missing: .ci/run installs it (apt-get install -y chromium)")
    pytest.skip("needs a headless Chromium: apt-get install -y chromium")


def browser(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    flags = ["--headless", "--disable-gpu", "--no-first-run", "--hide-scrollbars",
             f"--user-data-dir={tmp / 'chromium-profile'}"]  # fmt: skip
    if os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to sandbox as root
    proc = subprocess.run([chromium(), *flags, *args], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class Cells(HTMLParser):
    """Every element with data-model and data-benchmark: its tag, attributes and text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[dict] = []
        self.stack: list[dict | None] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        rec = {"tag": tag, **a, "text": ""} if "data-model" in a and "data-benchmark" in a else None
        if rec is not None:
            self.found.append(rec)
        if tag not in VOID:
            self.stack.append(rec)

    def handle_startendtag(self, tag, attrs):  # <rect .../>: nothing inside, nothing to close
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if self.stack:
            self.stack.pop()

    def handle_data(self, data):
        for rec in self.stack:
            if rec is not None:
                rec["text"] += data


def dom_of(html_file: Path, tmp: Path) -> str:
    return browser(tmp, "--dump-dom", html_file.resolve().as_uri()).stdout


def cells(dom: str, tag: str | None = None, cls: str = "") -> dict[tuple[str, str], dict]:
    p = Cells()
    p.feed(dom)
    return {(c["data-model"], c["data-benchmark"]): c for c in p.found
            if (tag is None or c["tag"] == tag) and cls in c.get("class", "").split()}  # fmt: skip


def png_pixels(path: Path) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Decode an 8-bit RGB/RGBA PNG (what Chromium writes) with the standard library."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (n,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + n]
        if kind == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0, (depth, ctype, interlace)
            bpp = 3 if ctype == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    raw, stride = zlib.decompress(idat), width * bpp
    prev, pixels = bytearray(stride), []
    for y in range(height):
        f, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        pixels += [tuple(line[i : i + 3]) for i in range(0, stride, bpp)]
        prev = line
    return width, height, pixels


def screenshot(html_file: Path, tmp: Path) -> list[tuple[int, int, int]]:
    shot = tmp / (html_file.stem + ".png")
    browser(tmp, f"--screenshot={shot}", "--window-size=1200,1400", html_file.resolve().as_uri())
    w, h, pixels = png_pixels(shot)
    assert (w, h) == (1200, 1400)
    return pixels


def check_in_browser(html_file: Path, doc: dict, tmp: Path) -> dict[tuple[str, str], dict]:
    """The page as Chromium builds it shows every pair with the document's status and value, in
    the heatmap and in the bar charts, and paints them (the screenshot is not blank)."""
    dom = dom_of(html_file, tmp)
    heat = cells(dom, "td", "cell")
    bars = cells(dom, "g", "bar")
    pairs = {(p["model"], p["benchmark"]): p for p in doc["pairs"]}
    assert set(pairs) <= set(heat) and set(pairs) <= set(bars)
    for key, p in pairs.items():
        for shown in (heat[key], bars[key]):
            assert shown["data-status"] == p["status"], (key, shown)
            if p["status"] == "done" and p["value"] is not None:
                assert float(shown["data-value"]) == p["value"]
            else:
                assert shown["data-value"] == "", (key, shown)  # no score is never a 0
        text = heat[key]["text"].strip()
        if p["status"] == "done" and p["value"] is not None:
            assert text == f"{p['value']:.2f}"
        else:
            assert text in ("n/a", p["status"]), (key, text)
    for key in set(heat) - set(pairs):
        assert heat[key]["data-status"] == "missing" and heat[key]["text"].strip() == "not run"

    pixels = screenshot(html_file, tmp)
    colours = set(pixels)
    ink = sum(1 for p in pixels if p != (255, 255, 255))
    assert len(colours) > 50 and ink > len(pixels) // 50, (len(colours), ink)
    # Each scored cell's own colour is really painted.
    for key, p in pairs.items():
        if p["status"] == "done" and p["value"] is not None:
            bg = re.search(r"background:#([0-9a-f]{6})", heat[key]["style"]).group(1)
            want = tuple(int(bg[i : i + 2], 16) for i in (0, 2, 4))
            assert any(
                max(abs(a - b) for a, b in zip(px, want, strict=True)) <= 2 for px in colours
            ), (key, bg)
    return heat


def static_checks(page: str) -> None:
    """Self-contained: nothing to fetch, no script."""
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", page, re.I)
    assert set(re.findall(r"https?://[^\s\"'<>]+", page)) <= {"http://www.w3.org/2000/svg"}


# ---- rendering from rows (no browser, no env) -------------------------------------------------

EVIL = '<script>alert("x")</script>&amp;'
CATALOG = Catalog(
    envs={},
    models={},
    benchmarks={
        "MMB": Benchmark("MMB", metric="Overall accuracy", headline="Overall", scale=100),
        "POPE": Benchmark("POPE", kind="Y/N", metric="F1", headline="F1"),
        "NoHead": Benchmark("NoHead", headline=None),
    },
    addons={},
)


def row(model: str, bench: str, status: str, value: float | None = None, **kw) -> Row:
    base = {"env": "tf437", "metric": "acc", "samples": 8 if status == "done" else None,
            "limit": 8, "seconds": 3.25 if status == "done" else None, "error": "", "run": "r1",
            "log": f"logs/{model}.log"}  # fmt: skip
    base.update(kw)
    return Row(model=model, benchmark=bench, status=status, value=value, **base)


def manifest(name: str = "r1", **kw) -> dict:
    m = {
        "command": f"spectravenv eval a b --limit 8 --run-name {name}", "status": "failed",
        "started": "2026-12-01T10:00:00+0000", "finished": "2026-12-01T10:05:00+0000",
        "host": "node1", "launcher": "local", "judge": "exact_matching", "limit": 8, "seed": 0,
        "spectravenv": {"version": "0.1.0", "git_revision": "abc123def4567890"},
        "models": ["m-good", EVIL], "benchmarks": ["MMB", "POPE"], "skipped_pairs": [],
        "secrets_passed": ["HF_TOKEN"],
        "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "memory_total_mb": 81559,
                  "driver": "550.54", "used": True}],
        "envs": {"tf437": {"key": "k1", "lock_sha256": "f" * 64, "python": "3.10.13",
                           "cuda_runtime": "12.1",
                           "versions": {"torch": "2.1.2", "transformers": "4.37.2", "vlmeval": "0.0.20"}}},
        "attempts": [{"started": "2026-12-01T10:00:00+0000", "command": "spectravenv eval ...",
                      "host": "node1", "envs": {"tf437": {"key": "k1", "lock_sha256": "f" * 64}}}],
    }  # fmt: skip
    m.update(kw)
    return m


def sample_rows() -> list[Row]:
    return [
        row("m-good", "MMB", "done", 62.5, subscores={"Overall": 0.625, "cat/a": 0.5}),
        row("m-good", "POPE", "done", 81.25, subscores={"F1": 81.25}),
        row("m-good", "NoHead", "done", None, note="no headline metric"),
        row(EVIL, "MMB", "failed", error=f"RuntimeError: {EVIL} went wrong\n" + "x" * 2000),
        row(EVIL, "POPE", "skipped", error="unsupported by the env's VLMEvalKit"),
        row("m-zero", "MMB", "done", 0.0, subscores={"Overall": 0.0}),
        row("m-zero", "POPE", "pending"),
        row("m-zero", "NoHead", "interrupted", error="stopped"),
    ]


def render(rows: list[Row], manifests=None) -> tuple[dict, str]:
    doc = results_json.build(rows, manifests or [("r1", manifest())], CATALOG)
    return doc, report_html.render(doc)


def test_untrusted_text_is_escaped_everywhere():
    doc, page = render(sample_rows())
    assert "<script" not in page and 'alert("x")' not in page
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;amp;" in page
    static_checks(page)
    # ...and the document keeps the text as it was (JSON escapes by itself).
    assert json.loads(results_json.dumps(doc))["pairs"][0]["model"] == EVIL


def test_a_pair_without_a_score_is_marked_never_zero():
    doc, page = render(sample_rows())
    p = Cells()
    p.feed(page)
    by_pair = {(r["model"], r["benchmark"]): r for r in doc["pairs"]}
    subs = {(s["model"], s["benchmark"], s["name"]): s["value"] for s in doc["subscores"]}
    shown = {}
    for c in p.found:
        model, bench, tag = c["data-model"], c["data-benchmark"], c["tag"]
        if "data-subscore" in c:
            assert float(c["data-value"]) == subs[(model, bench, c["data-subscore"])]
            continue
        shown.setdefault((model, bench, tag), c)  # the heatmap's cell comes first
        pair = by_pair.get((model, bench))
        if pair is None:
            assert c["data-status"] == "missing"
            continue
        assert c["data-status"] == pair["status"]
        if pair["value"] is None:
            assert c["data-value"] == "" and "0.00" not in c["text"], (model, bench, tag, c)
        else:
            assert float(c["data-value"]) == pair["value"]
    assert len([c for c in p.found if "data-subscore" in c]) == len(subs)
    # A real 0 is a score, shown as one; the failed pair beside it is not.
    assert by_pair[("m-zero", "MMB")]["value"] == 0.0
    assert shown[("m-zero", "MMB", "td")]["text"] == "0.00"
    assert shown[(EVIL, "MMB", "td")]["text"] == "failed"
    assert shown[("m-good", "NoHead", "td")]["text"] == "n/a"
    # The error excerpt is cut, and its log is named.
    fail = next(c for (m, b, t), c in shown.items() if t == "tr" and m == EVIL and b == "MMB")
    assert "went wrong" in fail["text"] and len(fail["text"]) < 1200 and "logs/" in fail["text"]


def test_missing_pairs_of_a_merge_are_marked_and_the_limit_is_said():
    rows = [row("a", "MMB", "done", 50.0), row("b", "POPE", "done", 40.0, run="r2")]
    doc, page = render(rows, [("r1", manifest("r1")), ("r2", manifest("r2", limit=4))])
    assert doc["limits"] == [4, 8] and doc["runs"] == ["r1", "r2"]
    assert 'id="limit-notice" data-limit="4, 8"' in page
    p = Cells()
    p.feed(page)
    heat = {(c["data-model"], c["data-benchmark"]): c for c in p.found if c["tag"] == "td"}
    assert heat[("a", "POPE")]["data-status"] == heat[("b", "MMB")]["data-status"] == "missing"
    _, full = render(rows, [("r1", manifest("r1", limit=None))])
    assert "limit-notice" not in full and "none (full benchmarks)" in full


def test_same_rows_same_bytes_in_any_order():
    rows = sample_rows()
    doc1, page1 = render(rows)
    doc2, page2 = render(list(reversed(rows)))
    assert page1 == page2 and results_json.dumps(doc1) == results_json.dumps(doc2)
    assert doc1["schema"] == "spectravenv.results/1"
    counts = doc1["summary"]["statuses"]
    assert sum(counts.values()) == len(rows) == doc1["summary"]["pairs"]
    assert [s["name"] for s in doc1["subscores"] if s["model"] == "m-good"] == [
        "Overall",
        "cat/a",
        "F1",
    ]


def test_the_page_in_a_real_browser(tmp_path):
    doc, page = render(sample_rows())
    html_file = tmp_path / "EVALUATION_REPORT.html"
    html_file.write_text(page)
    heat = check_in_browser(html_file, doc, tmp_path)
    assert heat[(EVIL, "MMB")]["data-model"] == EVIL  # the browser saw the name, not markup


# ---- real runs (heavy) ------------------------------------------------------------------------

FAILING_MODELS = """
[models.flaky-demo]
env = "tf437"
builtin = "demo-tiny-llava"
cpu = true
kwargs = { fail_on = ["DemoShapes"] }

[models.broken-demo]
env = "tf437"
builtin = "demo-tiny-llava"
cpu = true
kwargs = { fail_load = true }

# A benchmark the env's VLMEvalKit is too old for: --skip-unsupported leaves its pairs out.
[benchmarks.DemoFuture]
category = "Demo"
kind = "MCQ"
metric = "Overall accuracy"
headline = "Overall"
scale = 100
samples = 24
builtin = "DemoMCQ"
since_vlmeval = "99.0"
"""


def summary_csv(run: Path) -> dict[tuple[str, str], dict]:
    with (run / "results" / "summary.csv").open() as f:
        return {(r["model"], r["benchmark"]): r for r in csv.DictReader(f)}


def check_run_outputs(out: Path, tmp: Path) -> dict:
    """results.json agrees with summary.csv, the page with results.json, in the browser."""
    doc = json.loads((out / "results.json").read_text())
    assert doc["schema"] == "spectravenv.results/1"
    table = summary_csv(out)
    pairs = {(p["model"], p["benchmark"]): p for p in doc["pairs"]}
    assert set(pairs) == set(table)
    for key, r in table.items():
        assert pairs[key]["status"] == r["status"] and pairs[key]["run"] == r["run"]
        if r["value"]:
            assert pairs[key]["value"] == pytest.approx(float(r["value"]), abs=1e-9)
        else:
            assert pairs[key]["value"] is None
    page = (out / "EVALUATION_REPORT.html").read_text()
    static_checks(page)
    heat = check_in_browser(out / "EVALUATION_REPORT.html", doc, tmp)
    for key, r in table.items():
        assert heat[key]["data-status"] == r["status"]
        if r["value"]:
            assert float(heat[key]["data-value"]) == pytest.approx(float(r["value"]), abs=1e-9)
    return doc


def rebuilt_same(ws: Workspace, *args: str, out: Path) -> None:
    files = [out / "results.json", out / "EVALUATION_REPORT.html"]
    before = [f.read_bytes() for f in files]
    for f in files:
        f.unlink()
    ws.run("report", *args, check=True)
    assert [f.read_bytes() for f in files] == before


@pytest.mark.heavy
def test_report_of_a_demo_run_in_the_browser(demo_ws, tmp_path):
    proc = demo_ws.run("eval", "demo-tiny-llava", "DemoMCQ", "DemoShapes", "--limit", "8",
                       "--run-name", "d")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    run = demo_ws.cwd / "outputs" / "d"
    doc = check_run_outputs(run, tmp_path)
    assert {p["status"] for p in doc["pairs"]} == {"done"} and len(doc["pairs"]) == 2
    assert (
        doc["limits"] == [8]
        and doc["provenance"][0]["envs"]["tf437"]["versions"]["transformers"] == "4.37.2"
    )
    for p in doc["pairs"]:
        # Sub-scores as VLMEvalKit wrote them, the headline among them x 100, the fingerprint.
        subs = {s["name"]: s["value"] for s in doc["subscores"] if s["benchmark"] == p["benchmark"]}
        assert p["value"] == pytest.approx(subs["Overall"] * 100, abs=1e-9)
        assert p["fingerprint"]["settings"]["limit"] == 8 and p["fingerprint_digest"]
    page = (run / "EVALUATION_REPORT.html").read_text()
    assert "Sample limit: 8 per benchmark" in page and "exact_matching" in page
    rebuilt_same(demo_ws, str(run), out=run)


@pytest.mark.heavy
def test_report_of_failed_skipped_and_missing_pairs_in_the_browser(demo_ws, tmp_path):
    (demo_ws.cwd / "spectravenv.toml").write_text(FAILING_MODELS)
    ok = demo_ws.run("eval", "demo-tiny-llava", "DemoMCQ", "--limit", "2", "--run-name", "ok")
    assert ok.returncode == 0, ok.stderr
    proc = demo_ws.run("eval", "flaky-demo", "broken-demo", "DemoMCQ", "DemoShapes", "DemoFuture",
                       "--limit", "2", "--skip-unsupported", "--run-name", "bad")  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    bad = demo_ws.cwd / "outputs" / "bad"
    doc = check_run_outputs(bad, tmp_path)
    status = {(p["model"], p["benchmark"]): p["status"] for p in doc["pairs"]}
    assert status[("flaky-demo", "DemoMCQ")] == "done"
    assert status[("flaky-demo", "DemoShapes")] == "failed"
    assert status[("broken-demo", "DemoMCQ")] == "failed"
    assert (
        status[("flaky-demo", "DemoFuture")] == status[("broken-demo", "DemoFuture")] == "skipped"
    )
    page = (bad / "EVALUATION_REPORT.html").read_text()
    assert (
        "fail_on test hook" in page
        and "fail_load test hook" in page
        and "<h2>Failures</h2>" in page
    )
    rebuilt_same(demo_ws, str(bad), out=bad)

    # Merged with the good run: demo-tiny-llava never ran DemoShapes or DemoFuture.
    merged = demo_ws.cwd / "merged"
    demo_ws.run(
        "report", str(demo_ws.cwd / "outputs" / "ok"), str(bad), "-o", str(merged), check=True
    )
    mdoc = check_run_outputs(merged, tmp_path)
    assert mdoc["runs"] == ["ok", "bad"] and [p["run"] for p in mdoc["provenance"]] == ["ok", "bad"]
    heat = cells(dom_of(merged / "EVALUATION_REPORT.html", tmp_path), "td", "cell")
    assert heat[("demo-tiny-llava", "DemoShapes")]["data-status"] == "missing"
    assert heat[("demo-tiny-llava", "DemoMCQ")]["data-run"] == "ok"
    rebuilt_same(
        demo_ws, str(demo_ws.cwd / "outputs" / "ok"), str(bad), "-o", str(merged), out=merged
    )
