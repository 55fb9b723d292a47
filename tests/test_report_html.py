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

from spectravenv.catalog.entries import Benchmark, Catalog
from spectravenv.report import html as report_html
from spectravenv.results import document as results_json
from spectravenv.results.rows import Row

from .conftest import Workspace, unavailable

# ---- helpers: the browser, its DOM, its screenshot --------------------------------------------


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        exe = shutil.which(name)
        if exe:
            return exe
    unavailable("needs a headless Chromium: apt-get install -y chromium")


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
            assert text.split()[0] == f"{p['value']:.1f}", (key, text)
            if p["interval"]:  # the interval is shown, and the score lies in it
                assert float(heat[key]["data-low"]) <= p["value"] <= float(heat[key]["data-high"])
                assert "±" in text or "[" in text, text
            if p["limit"] is not None:
                assert f"{p['samples']} of {p['rows_full']}" in text if p["rows_full"] else True
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
    """Self-contained: nothing to fetch, no script; images inlined, links only relative ones to
    the run's own files."""
    assert "<script" not in page.lower()
    assert not re.search(r"""@import|url\(""", page, re.I)
    for attr, target in re.findall(r'\b(src|href)\s*=\s*"([^"]*)"', page, re.I):
        if attr.lower() == "src":
            assert target.startswith("data:image/"), target
        else:
            assert not re.match(r"^[a-z]+:|^/|^//", target, re.I), target  # relative only
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
    raw = {(s["model"], s["benchmark"], s["name"]): s["raw"] for s in doc["subscores"]}
    # Sub-scores on the headline's scale: MMB's fractions x 100; POPE's percentages as they are.
    assert subs[("m-good", "MMB", "Overall")] == 62.5 and subs[("m-good", "POPE", "F1")] == 81.25
    shown = {}
    for c in p.found:
        model, bench, tag = c["data-model"], c["data-benchmark"], c["tag"]
        if "data-subscore" in c:
            sub = subs[(model, bench, c["data-subscore"])]
            assert float(c["data-value"]) == (sub if sub is not None else raw[(model, bench, c["data-subscore"])])
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
    assert shown[("m-zero", "MMB", "td")]["text"].split()[0] == "0.0"
    assert shown[(EVIL, "MMB", "td")]["text"] == "failed"
    assert shown[("m-good", "NoHead", "td")]["text"] == "n/a"
    # The error excerpt is cut, and its log is named.
    fail = next(c for (m, b, t), c in shown.items() if t == "tr" and m == EVIL and b == "MMB")
    assert "went wrong" in fail["text"] and len(fail["text"]) < 1200 and "logs/" in fail["text"]


def test_missing_pairs_of_a_merge_are_marked_and_the_limit_is_said():
    rows = [row("a", "MMB", "done", 50.0), row("b", "POPE", "done", 40.0, run="r2", limit=4)]
    doc, page = render(rows, [("r1", manifest("r1")), ("r2", manifest("r2", limit=4))])
    assert doc["limits"] == [4, 8] and doc["runs"] == ["r1", "r2"]
    assert 'id="limit-notice" data-limit="4, 8"' in page
    p = Cells()
    p.feed(page)
    heat = {(c["data-model"], c["data-benchmark"]): c for c in p.found if c["tag"] == "td"}
    assert heat[("a", "POPE")]["data-status"] == heat[("b", "MMB")]["data-status"] == "missing"
    unlimited = [row("a", "MMB", "done", 50.0, limit=None), row("b", "POPE", "done", 40.0, limit=None)]
    _, full = render(unlimited, [("r1", manifest("r1", limit=None))])
    assert "limit-notice" not in full and "none (full benchmarks)" in full


def test_same_rows_same_bytes_in_any_order():
    rows = sample_rows()
    doc1, page1 = render(rows)
    doc2, page2 = render(list(reversed(rows)))
    assert page1 == page2 and results_json.dumps(doc1) == results_json.dumps(doc2)
    assert doc1["schema"] == "spectravenv.results/2"
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
    assert doc["schema"] == "spectravenv.results/2"
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
        subs = {s["name"]: s for s in doc["subscores"] if s["benchmark"] == p["benchmark"]}
        assert p["value"] == pytest.approx(subs["Overall"]["raw"] * 100, abs=1e-9)
        assert subs["Overall"]["value"] == pytest.approx(p["value"], abs=1e-9)  # on the headline's scale
        assert p["fingerprint"]["settings"]["limit"] == 8 and p["fingerprint_digest"]
    page = (run / "EVALUATION_REPORT.html").read_text()
    assert "Sample limit 8 per benchmark" in page and "exact_matching" in page and "8 of 24" in page
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


# ---- the sample viewer (rows made up here, a real browser) ------------------------------------


def tiny_png(rgb: tuple[int, int, int], size: int = 4) -> bytes:
    """An RGB PNG written with the standard library."""
    raw = b"".join(b"\x00" + bytes(rgb) * size for _ in range(size))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    head = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", head) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def viewer_rows() -> list[Row]:
    from spectravenv.results import samples

    hits = [1, 0, 1, 1, 0, 1, 1, 1]
    sset = samples.SampleSet("m-good/MMB/m-good_MMB_exact_matching_result.xlsx", "hit", [
        samples.Sample(str(i), float(h), str(i), question=f"Q{i} <b>?</b>", prediction="A" if h else "C", answer="A")
        for i, h in enumerate(hits)])  # fmt: skip
    judged = samples.assess(sset, "Overall", 75.0)
    return [row("m-good", "MMB", "done", 75.0, subscores={"Overall": 0.75}, interval=judged.interval,
                sample_set=sset, rows_full=24, prediction_file="m-good/MMB/m-good_MMB.xlsx",
                score_files=["m-good/MMB/m-good_MMB_acc.csv"])]  # fmt: skip


def test_the_sample_viewer_in_a_real_browser(tmp_path):
    import base64

    doc = results_json.build(viewer_rows(), [("r1", manifest())], CATALOG)
    [p] = doc["pairs"]
    assert [e["index"] for e in p["examples"]][:2] == ["1", "4"]  # wrong answers first
    tsv = tmp_path / "MMB.tsv"
    red = base64.b64encode(tiny_png((220, 20, 20))).decode()
    lines = ["index\tquestion\timage"] + [f"{i}\tQ{i}\t{red if i == 0 else '0'}" for i in range(8)]
    tsv.write_text("\n".join(lines) + "\n")  # rows 1-7 share row 0's image, as VLMEvalKit's TSVs do
    images = report_html.tsv_images(tsv, {e["index"] for e in p["examples"]})
    assert set(images) == {str(i) for i in range(8)} and images["3"].startswith("data:image/png;base64,")
    assets = report_html.Assets(links={("m-good", "MMB"): [("predictions", "m-good/MMB/m-good_MMB.xlsx")]},
                                images={("MMB", i): uri for i, uri in images.items()})  # fmt: skip
    page = report_html.render(doc, assets)
    assert page == report_html.render(doc, assets)  # byte-stable
    static_checks(page)
    # Opened (the <details> open) in Chromium: the viewer's rows, their order and their images.
    html_file = tmp_path / "viewer.html"
    html_file.write_text(page.replace('<details class="viewer"', '<details open class="viewer"'))
    dom = dom_of(html_file, tmp_path)
    shown = re.findall(r'<tr class="(right|wrong)" data-index="(\d+)" data-score="([0-9.]+)">(.*?)</tr>', dom)
    assert [(i, c) for c, i, _, _ in shown] == [("1", "wrong"), ("4", "wrong")] + [(str(i), "right") for i in (0, 2, 3, 5, 6, 7)]
    assert all('src="data:image/png;base64,' in body and "&lt;b&gt;" in body for *_, body in shown)
    assert '<a href="m-good/MMB/m-good_MMB.xlsx">predictions</a>' in dom
    pixels = screenshot(html_file, tmp_path)
    assert any(max(abs(a - b) for a, b in zip(px, (220, 20, 20), strict=True)) <= 3 for px in pixels)


def test_the_legend_shows_only_statuses_that_occur_and_one_model_gets_one_chart():
    _, page = render([row("a", "MMB", "done", 50.0), row("a", "POPE", "failed", error="x")])
    legend = re.search(r'<p class="legend" id="legend">(.*?)</p>', page).group(1)
    assert "failed" in legend and "skipped" not in legend and "pending" not in legend and "n/a" not in legend
    assert page.count("<svg") == 1  # one chart over the benchmarks, not a chart per single bar
    _, page2 = render([row("a", "MMB", "done", 50.0), row("b", "MMB", "done", 40.0)])
    assert 'id="legend"' not in page2 and page2.count("<svg") == 1
