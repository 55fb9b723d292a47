"""Video benchmarks: Video-MME end to end on synthetic videos, and the plan's refusal of the video
classes the runner has not been proven on.

The heavy test makes four tiny videos (16 frames of 64x64, each frame the demo's scene of one
DemoMCQ row) and the Video-MME questions about them ("What colour is the shape in the <corner>
corner?", options A-D), in the layout of the hub's `lmms-lab/Video-MME` dataset repo
(tests/data/make_video_mme.py, in the env's Python: cv2 writes, decord reads back). A stand-in
hub (tests/hubstub.py) serves that repo, so `VideoMME.prepare_dataset` downloads it with
huggingface_hub's own `snapshot_download` (sha256-checked per file), unzips the videos and makes
its TSV from the parquet as it does for the real data. Then `spectravenv eval split-demo
Video-MME_8frame` (the demo under a slow estimate): VLMEvalKit's video path samples 8 frames per
video with decord and hands them to the demo as images; `VideoMME.evaluate` scores by exact
matching. The headline read from the score file must equal the score computed here from the
prediction file and the answers this test wrote. That estimate splits the questions into units;
the demo under an estimate that keeps them in one unit gives the same answers and score.
"""

from __future__ import annotations

import base64
import csv
import json
import re
from pathlib import Path

import openpyxl
import pytest
from svrunner.demo.scenes import (
    COLOURS,
    CORNERS,
    IMG_SIZE,
    KINDS,
    OPTION_LETTERS,
    dataset_items,
    render_scene_rgb,
)

from spectravenv import procs

from .conftest import DATA, Workspace, sync_shipped
from .hubstub import HubStub

NAME = "Video-MME_8frame"
REPO_ID = "lmms-lab/Video-MME"  # VideoMME.prepare_dataset's repo_id
FRAMES = 16  # per video; the dataset samples 8 of them
QUESTIONS = 4
# The demo under two names whose estimates differ: a slow one splits the 4 questions into units
# (the worker infers them one by one, infer_data_job_video merges them), a fast one keeps them in
# one. Names of their own, so no speed another test measured for the demo changes the split.
MODELS = (
    '[models.split-demo]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\ncpu = true\n'
    "seconds_per_sample = 30\nload_seconds = 1\n"
    '[models.one-unit-demo]\nenv = "tf437"\nbuiltin = "demo-tiny-llava"\ncpu = true\n'
    "seconds_per_sample = 0.01\nload_seconds = 1\n"
)


def spec() -> dict:
    """The videos and the parquet rows of the official Video-MME columns."""
    kind = KINDS["DemoMCQ"]
    videos, questions = [], []
    for i, (scene, corner, answer) in enumerate(dataset_items(kind)[:QUESTIONS]):
        vid = f"vid{i:03d}"
        frame = base64.b64encode(render_scene_rgb(scene)).decode("ascii")
        videos.append({"id": vid, "frames": [frame] * FRAMES, "colours": [c for _, c in scene]})
        questions.append({
            "video_id": f"{i + 1:03d}", "duration": "short", "domain": "Knowledge",
            "sub_category": "Humanity & History", "url": f"https://example.invalid/{vid}",
            "videoID": vid, "question_id": f"{i + 1:03d}-1", "task_type": "Attribute Perception",
            "question": kind.question.format(corner=CORNERS[corner]),
            "options": [f"{letter}. {o}" for letter, o in zip(OPTION_LETTERS, kind.options, strict=True)],
            "answer": OPTION_LETTERS[answer],
        })  # fmt: skip
    return {"size": IMG_SIZE, "videos": videos, "questions": questions}


def snapshot_files(python: str, ws: Workspace, tmp_path: Path, rows: dict) -> dict[str, bytes]:
    (tmp_path / "spec.json").write_text(json.dumps(rows))
    out = tmp_path / "snapshot"
    made = procs.run([python, str(DATA / "make_video_mme.py"), str(tmp_path / "spec.json"), str(out)],
                     env=ws.env, cwd=tmp_path, timeout=600)  # fmt: skip
    assert made.returncode == 0, f"{made.stdout}\n{made.stderr[-4000:]}"
    names = ["videos_chunked_01.zip", "subtitle.zip", "videomme/test-00000-of-00001.parquet"]
    return {n: (out / n).read_bytes() for n in names}


# The mean colour of a 3x3 patch at each quadrant's centre (inside every demo shape).
QUADRANT_COLOURS = """
import json, sys
from PIL import Image
im = Image.open(sys.argv[1]).convert("RGB")
h = im.size[0] // 2
means = []
for q in range(4):
    cx, cy = h // 2 + h * (q % 2), h // 2 + h * (q // 2)
    px = [im.getpixel((cx + dx, cy + dy)) for dx in (-1, 0, 1) for dy in (-1, 0, 1)]
    means.append([sum(p[i] for p in px) / len(px) for i in range(3)])
print(json.dumps(means))
"""


def nearest_colour(rgb: list[float]) -> str:
    return min(
        COLOURS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLOURS[c], rgb, strict=True))
    )


def frame_colours(python: str, frame: Path) -> list[str]:
    """The demo colours nearest to what a saved frame shows in its four quadrants."""
    proc = procs.run([python, "-c", QUADRANT_COLOURS, str(frame)], timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [nearest_colour(rgb) for rgb in json.loads(proc.stdout)]


def predictions(pair: Path, model: str = "demo-tiny-llava") -> dict[str, str]:
    [pred] = [p for p in pair.glob(f"{model}_{NAME}.*") if p.suffix in (".xlsx", ".tsv", ".csv")]
    book = openpyxl.load_workbook(pred, read_only=True)
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    col = {h: i for i, h in enumerate(rows[0])}
    return {
        r[col["videoID" if "videoID" in col else "video"]]: str(r[col["prediction"]])
        for r in rows[1:]
    }


@pytest.mark.heavy
def test_video_mme_runs_end_to_end_on_synthetic_videos(demo_ws: Workspace, tmp_path: Path):
    ws = demo_ws
    ws.env.update(LMUData=str(tmp_path / "LMUData"), HF_HOME=str(tmp_path / "hf"))
    ws.env.pop("HF_HUB_OFFLINE", None)  # the stand-in hub serves the dataset
    rows = spec()
    _, state, _ = sync_shipped(ws.home, "tf437", ws.cwd)
    python = state.python
    files = snapshot_files(python, ws, tmp_path, rows)
    with HubStub() as hub:
        hub.add_repo(REPO_ID, files, repo_type="dataset")
        ws.env["HF_ENDPOINT"] = hub.url
        (ws.cwd / "spectravenv.toml").write_text(MODELS)
        proc = ws.run("eval", "split-demo", NAME, "--run-name", "video", timeout=1800)
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr[-6000:]}"
        got = {r["path"] for r in hub.requests if r["method"] == "GET"}
        assert {f"/datasets/{REPO_ID}/resolve/{hub.repos[REPO_ID].sha}/{n}" for n in files} <= got
        one = ws.run("eval", "one-unit-demo", NAME, "--run-name", "one", timeout=1800)
        assert one.returncode == 0, f"{one.stdout}\n{one.stderr[-6000:]}"
    # VLMEvalKit's frame sampling: 8 frames of each video, saved where the dataset keeps them.
    frames = Path(ws.env["LMUData"]) / "images" / "Video-MME"
    for v in rows["videos"]:
        assert sorted(p.name for p in (frames / v["id"]).glob("*.jpg")) == sorted(
            f"frame-{i}-of-8.jpg" for i in range(1, 9)
        )
        # what decord read back from the mp4 is the scene that was drawn into it
        assert frame_colours(python, frames / v["id"] / "frame-1-of-8.jpg") == v["colours"]
    run = ws.cwd / "outputs" / "video"
    pred = predictions(run / "split-demo" / NAME, "split-demo")
    answers = {q["videoID"]: q["answer"] for q in rows["questions"]}
    assert set(pred) == set(answers)
    # The demo answers with a letter; the score is then the share of right letters.
    assert all(re.fullmatch(r"[ABCD]", p.strip()) for p in pred.values()), pred
    expected = 100 * sum(pred[v].strip() == answers[v] for v in answers) / len(answers)
    with (run / "results" / "summary.csv").open() as f:
        [row] = [r for r in csv.DictReader(f) if r["benchmark"] == NAME]
    assert row["status"] == "done", row
    assert float(row["value"]) == pytest.approx(expected, abs=1e-6), (row, pred, answers)
    # In units or in one, the same answers and score.
    assert units(run) > 1 and units(ws.cwd / "outputs" / "one") == 1
    assert predictions(ws.cwd / "outputs" / "one" / "one-unit-demo" / NAME, "one-unit-demo") == pred
    with (ws.cwd / "outputs" / "one" / "results" / "summary.csv").open() as f:
        [again] = [r for r in csv.DictReader(f) if r["benchmark"] == NAME]
    assert again["status"] == "done" and float(again["value"]) == float(row["value"])


def units(run: Path) -> int:
    """How many units the run's worker inferred Video-MME in (its unit_started events)."""
    lines = [
        ln
        for f in (run / ".spectravenv" / "events").glob("*.jsonl")
        for ln in f.read_text().splitlines()
    ]
    started = [json.loads(ln) for ln in lines if '"unit_started"' in ln]
    return len({e["unit"] for e in started if e.get("benchmark") == NAME})


def test_benchmarks_and_the_plan_say_which_video_classes_run(ws: Workspace):
    listing = ws.run("benchmarks", "--modality", "video", check=True).stdout
    status = {line.split()[0]: line for line in listing.splitlines()[2:] if line.strip()}
    assert status[NAME].rstrip().endswith("runnable")
    assert "not yet: video class MVBench not checked end to end yet" in status["MVBench_8frame"]
    assert "not yet: subtitles need pysubs2" in status["Video-MME_8frame_subs"]
    assert "not yet: a video name without frames" in status["Video-MME"]
    plan = ws.run("eval", "demo-tiny-llava", NAME, "MVBench_8frame", "--dry-run")
    out = plan.stdout + plan.stderr
    assert "MVBench_8frame" in out and "video class MVBench not checked end to end yet" in out, out
    ok = ws.run("eval", "demo-tiny-llava", NAME, "--dry-run", check=True).stdout
    assert NAME in ok and "cannot run" not in ok
