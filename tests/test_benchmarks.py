"""The benchmark catalog: every dataset of the envs' VLMEvalKit, searchable, with suites, judges,
headline rules, sample counts from the TSVs on disk, and plans that refuse what cannot run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spectravenv.catalog import loader, samples
from spectravenv.errors import SpectravenvError
from spectravenv.paths import Paths

from .conftest import DATA, REPO
from .test_catalog import SEED_BENCHMARKS, load
from .test_envs import one_line_error

OPENVLM = ["MMBench_DEV_EN_V11", "MMStar", "MMMU_DEV_VAL", "MathVista_MINI", "HallusionBench", "AI2D_TEST",
           "OCRBench", "MMVet"]  # fmt: skip


def shipped():
    return loader.load(Paths.from_env({"HOME": "/nonexistent"}, cwd=DATA / "no-config"))


def probe(env: str = "tf437") -> dict:
    return json.loads((REPO / "data" / "probes" / f"{env}.json").read_text())


# ---- what the catalog holds ---------------------------------------------------------------------


def test_every_dataset_of_every_env_is_a_benchmark():
    """518 image names (the union of supported_datasets() over DATASET_CLASSES) and 207 video
    configs in VLMEvalKit 0.0.20, each with the class build_dataset makes of it."""
    cat = shipped()
    official = {n: b for n, b in cat.benchmarks.items() if not b.builtin}
    for env in cat.model_envs():
        names = probe(env)["datasets"]
        assert set(names) <= set(official), env
        for name, entry in names.items():
            b = official[name]
            assert b.vlmeval_class == entry["class"], name
            assert not b.envs or env in b.envs, (name, env)
    reference = probe()["datasets"]
    assert len(reference) == 725 and set(reference) == set(official)
    video = {n for n, e in reference.items() if e["config"] is not None}
    assert len(video) == 207
    # Runnable: VideoMME's configs with frames and without subtitles (tests/test_video.py).
    runs = {"Video-MME_8frame", "Video-MME_64frame", "Video-MME_1fps", "Video-MME_0.5fps"}
    for name in video:
        b = official[name]
        assert b.modality == "video", name
        assert not b.blocked if name in runs else ("video" in b.blocked or "subtitles" in b.blocked), name
        assert b.frames or b.fps, f"{name}: a video config says how it samples frames"
        assert "decord" in b.decoders
    assert cat.benchmarks["Video-MME_8frame"].frames == 8
    assert cat.benchmarks["Video-MME_1fps"].fps == 1


def test_the_seed_keeps_what_was_measured_and_gets_its_headline_from_rules():
    cat = shipped()
    for name in SEED_BENCHMARKS:
        b = cat.benchmarks[name]
        assert not b.samples_estimated and b.samples > 0, name
        assert b.kind in {"MCQ", "VQA", "Y/N", "OCR"} and b.modality in {"image", "multi-image"}, name
    assert cat.benchmarks["MMBench_DEV_EN"].samples == 4329
    # the headline of every MCQ set comes from the rule for ImageMCQDataset's evaluate(): fractions
    for name in ("MMBench_DEV_EN", "AI2D_TEST", "MMStar", "SEEDBench_IMG", "VisOnlyQA-VLMEvalKit", "MMStar_KO"):
        b = cat.benchmarks[name]
        assert (b.headline, b.scale, b.per_sample) == ("Overall", 100, False), name
        assert b.headline_from.startswith("ImageMCQDataset.evaluate"), name
    assert (cat.benchmarks["MMMU_DEV_VAL"].headline, cat.benchmarks["MMMU_DEV_VAL"].scale) == ("validation/Overall", 100)
    assert (cat.benchmarks["TextVQA_VAL"].headline, cat.benchmarks["TextVQA_VAL"].scale) == ("Overall", 1)
    assert (cat.benchmarks["POPE"].headline, cat.benchmarks["HallusionBench"].headline) == ("Overall/Overall", "Overall/aAcc")
    assert cat.benchmarks["OCRBench"].per_sample and cat.benchmarks["OCRBench"].headline == "Final Score"
    assert cat.benchmarks["OCRBench"].kind == "OCR" and cat.benchmarks["CCOCR_MultiLanOcr_Korean"].kind == "OCR"
    # No rule, no number: MME's raw sums and the classes nobody has read the score files of.
    assert cat.benchmarks["MME"].headline is None and "MME_rating" in cat.benchmarks["MME"].no_headline
    assert cat.benchmarks["NaturalBenchDataset"].headline is None
    assert cat.benchmarks["BLINK"].modality == "multi-image"


def test_judges_follow_run_py_and_the_evaluate_code():
    """Judge = vlmeval/run.py's default pick where the scoring calls a judge at all; need from
    what evaluate() reaches. The heavy test_benchmark_envs re-derives both in every real env."""
    cat = shipped()
    expect = {
        "MMBench_DEV_EN": ("gpt-4o-mini", "optional"),  # MCQ: exact matching first, the judge for the rest
        "HallusionBench": ("gpt-4o-mini", "optional"),
        "MMVet": ("gpt-4-turbo", "required"),  # a GPT grade per answer
        "LLaVABench_KO": ("gpt-4o-0806", "required"),
        "MathVista_MINI": ("gpt-4o-mini", "required"),  # the judge extracts every answer
        "TextVQA_VAL": (None, "none"),
        "OCRBench": (None, "none"),
        "VisualPuzzles": (None, "optional"),  # run.py picks exact_matching: no judge by default
        "OlympiadBench": (None, "optional"),  # a rule: a judge only when asked for one
    }
    for name, (judge, need) in expect.items():
        b = cat.benchmarks[name]
        assert (b.judge, b.judge_need) == (judge, need), name
        assert b.judge_evidence, name
    needs = {b.judge_need for b in cat.benchmarks.values()}
    assert needs == {"none", "optional", "required"}


def test_prefetch_gets_every_standard_tsv():
    cat = shipped()
    for name, entry in probe()["datasets"].items():
        b = cat.benchmarks[name]
        if b.url:
            assert (b.url, b.md5) == (entry["url"], (entry["md5"] or "").lower() or None), name
        else:
            assert b.note or b.modality == "video", name
    assert cat.benchmarks["ScreenSpot"].parts == ("ScreenSpot_Mobile", "ScreenSpot_Desktop", "ScreenSpot_Web")


# ---- suites -------------------------------------------------------------------------------------


def test_shipped_suites():
    cat = shipped()
    assert list(cat.suites["seed"].benchmarks) == SEED_BENCHMARKS
    assert list(cat.suites["openvlm"].benchmarks) == OPENVLM
    models, benchmarks = cat.classify(["Qwen2.5-VL-7B-Instruct", "openvlm", "POPE"])
    assert models == ["Qwen2.5-VL-7B-Instruct"] and benchmarks == [*OPENVLM, "POPE"]
    assert cat.benchmark_names("seed") == SEED_BENCHMARKS and cat.benchmark_names("POPE") == ["POPE"]


def test_a_user_defines_a_suite(tmp_path):
    cat = load(tmp_path, user_toml='[suites.mine]\ndescription = "two"\nbenchmarks = ["OCRBench", "POPE"]\n'
                                   '[suites.openvlm]\nbenchmarks = ["MMStar"]\n')  # fmt: skip
    assert cat.suites["mine"].benchmarks == ("OCRBench", "POPE")
    assert cat.suites["openvlm"].benchmarks == ("MMStar",)  # a user's file replaces a shipped suite's list
    assert cat.classify(["mine"]) == ([], ["OCRBench", "POPE"])


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[suites.mine]\nbenchmarks = ["MMBench_DEV_E"]\n',
         "suites.mine names unknown benchmark 'MMBench_DEV_E' (did you mean: MMBench_DEV_EN,"),
        ('[suites.mine]\nbenchmarks = []\n', "suites.mine needs a non-empty `benchmarks = [...]` list"),
        ('[suites.mine]\nbenchmark = ["POPE"]\n', "unknown key 'benchmark' (did you mean: benchmarks"),
        ('[suites.mine]\nbenchmarks = "POPE"\n', "suites.mine.benchmarks must be a list"),
        ('[suites.mine]\nbenchmarks = [1]\n', "suites.mine.benchmarks must hold benchmark names"),
        ('[suites.POPE]\nbenchmarks = ["MMStar"]\n', "suite 'POPE' has the name of a benchmark"),
        ('[suites.qwen_chat]\nbenchmarks = ["MMStar"]\n', "suite 'qwen_chat' has the name of a model"),
    ],
)  # fmt: skip
def test_a_bad_suite_is_one_clear_error(tmp_path, toml, message):
    with pytest.raises(SpectravenvError, match="spectravenv.toml") as e:
        load(tmp_path, user_toml=toml)
    assert message in str(e.value) and "\n" not in str(e.value)


# ---- searching ----------------------------------------------------------------------------------


def test_search_and_filters():
    cat = shipped()
    found = cat.select_benchmarks("mmbench_dev")
    assert found and all("mmbench_dev" in b.name.lower() for b in found)
    assert {b.name for b in cat.select_benchmarks("ImageYORN")} == {"MME", "HallusionBench", "POPE", "AMBER", "VSR-zeroshot"}
    ocr = cat.select_benchmarks(kind="ocr")
    assert "OCRBench" in {b.name for b in ocr} and all(b.kind == "OCR" for b in ocr)
    video = cat.select_benchmarks(modality="video")
    runnable = {b.name for b in video if not b.blocked}
    assert len(video) >= 207 and runnable == {"Video-MME_8frame", "Video-MME_64frame", "Video-MME_1fps", "Video-MME_0.5fps"}
    required = cat.select_benchmarks(judge="required")
    assert "MMVet" in {b.name for b in required} and all(b.judge_need == "required" for b in required)
    assert cat.select_benchmarks("mmvet", judge="none") == []
    with pytest.raises(SpectravenvError, match=r"--type 'MC': give one of .*MCQ"):
        cat.select_benchmarks(kind="MC")


# ---- sample counts from the TSV on disk ---------------------------------------------------------


def write_tsv(path: Path, rows: int) -> None:
    """A TSV as VLMEvalKit's have them: a header, base64-sized cells, a quoted question that
    holds a tab and a newline, a blank line (pandas skips it)."""
    lines = ["index\tquestion\timage\tanswer"]
    lines += [f'{i}\t"Line one\twith a tab\nline two"\t{"A" * 70000}\tB' for i in range(rows)]
    path.write_text("\n".join([*lines[:2], "", *lines[2:]]) + "\n")


def test_the_tsv_on_disk_gives_the_sample_count(tmp_path):
    data = tmp_path / "LMUData"
    data.mkdir()
    env = {"HOME": str(tmp_path), "LMUData": str(data), "SPECTRAVENV_HOME": str(tmp_path / "home")}
    paths = Paths.from_env(env, cwd=DATA / "no-config")
    before = loader.load(paths).benchmarks["MMVet"]
    assert before.samples_estimated
    write_tsv(data / "MMVet.tsv", 7)
    after = loader.load(paths).benchmarks["MMVet"]
    assert (after.samples, after.samples_estimated) == (7, False)
    cached = json.loads(samples.cache_file(paths).read_text())
    assert list(cached.values()) == [[(data / "MMVet.tsv").stat().st_size, (data / "MMVet.tsv").stat().st_mtime_ns, 7]]
    write_tsv(data / "MMVet.tsv", 3)  # a new download: counted again
    assert loader.load(paths).benchmarks["MMVet"].samples == 3
    assert loader.load(paths).benchmarks["MMStar"].samples == 1500  # measured, no TSV here


# ---- the CLI and the plan -----------------------------------------------------------------------


def test_benchmarks_command(ws):
    proc = ws.run("benchmarks", "--json")
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    names = {r["name"] for r in records}
    assert set(probe()["datasets"]) <= names
    mmvet = next(r for r in records if r["name"] == "MMVet")
    assert (mmvet["judge"], mmvet["judge_need"], mmvet["runnable"]) == ("gpt-4-turbo", "required", True)
    table, summary = ws.run("benchmarks", "mmbench", "--type", "MCQ", check=True).stdout.split("\n\n")
    rows = table.splitlines()[2:]
    assert len(rows) > 10 and all("mmbench" in ln.split()[0].lower() and " MCQ " in ln for ln in rows)
    assert summary.startswith(f"{len(rows)} benchmarks (")
    video = ws.run("benchmarks", "--modality", "video", check=True).stdout
    listed = {ln.split()[0]: ln for ln in video.split("\n\n")[0].splitlines()[2:]}
    assert "not yet: video class MVBench not checked end to end yet" in listed["MVBench_8frame"]
    assert [n for n, ln in listed.items() if ln.rstrip().endswith("runnable")] == [
        "Video-MME_0.5fps", "Video-MME_1fps", "Video-MME_64frame", "Video-MME_8frame"]  # fmt: skip
    suites = ws.run("benchmarks", "--suites", check=True).stdout
    assert suites.startswith("seed (24): ") and "\nopenvlm (8): " in suites
    bad = one_line_error(ws.run("benchmarks", "--type", "nosuch"))
    assert "--type 'nosuch': give one of" in bad


def test_a_suite_plans_on_an_assumed_node(ws):
    proc = ws.run("eval", "Qwen2.5-VL-7B-Instruct", "openvlm", "--dry-run", "--assume-gpus", "8x80")
    assert proc.returncode == 0, proc.stderr
    assert "8 benchmarks x 1 model = 8 pairs: 8 to run" in proc.stdout
    proc = ws.run("eval", "demo-tiny-llava", "MathVista_MINI", "-d", "openvlm", "--dry-run", "--assume-gpus", "1x80")
    assert proc.returncode == 0, proc.stderr
    assert "8 benchmarks x 1 model" in proc.stdout  # MathVista_MINI once


def test_a_benchmark_the_runner_cannot_run_is_refused_in_one_line(ws):
    msg = one_line_error(ws.run("eval", "demo-tiny-llava", "MVBench_8frame", "--dry-run", "--assume-gpus", "1x80"))
    assert "MVBench_8frame cannot run for demo-tiny-llava (env tf437): video class MVBench not checked" in msg
    assert "--skip-unsupported" in msg
    proc = ws.run("eval", "demo-tiny-llava", "MVBench_8frame", "DemoMCQ", "--dry-run", "--assume-gpus", "1x80",
                  "--skip-unsupported")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "left out, the benchmark cannot run in the model's env" in proc.stdout
    assert "demo-tiny-llava x MVBench_8frame" in proc.stdout


def test_a_benchmark_an_env_lacks_is_refused(tmp_path):
    from spectravenv.plan import jobs

    cat = load(tmp_path, user_toml='[benchmarks.POPE]\nenvs = ["tf457"]\n')
    with pytest.raises(SpectravenvError, match=r"the VLMEvalKit of env tf437 does not know it \(envs that do: tf457\)"):
        jobs.unsupported(cat, ["llava_v1.5_7b"], ["POPE"])
    assert jobs.unsupported(cat, ["llava_v1.5_7b"], ["POPE"], skip=True) == {("llava_v1.5_7b", "POPE")}
    cat = load(tmp_path, user_toml='[benchmarks.POPE]\ndecoders_missing = { tf437 = ["decord"] }\n')
    with pytest.raises(SpectravenvError, match="it reads its videos with decord, which env tf437 lacks"):
        jobs.unsupported(cat, ["llava_v1.5_7b"], ["POPE"])
