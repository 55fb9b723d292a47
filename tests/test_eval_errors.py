"""Bad input to `spectravenv eval`: one clear line, non-zero exit, nothing built or started."""

from __future__ import annotations

from pathlib import Path

import pytest

from .gpu_fixtures import h100s
from .test_envs import one_line_error

FAKES = Path(__file__).parent / "fakes"


@pytest.fixture
def fake_gpus(ws, tmp_path):
    (tmp_path / "gpus.csv").write_text(h100s(2, [81000, 10240]))
    ws.env.update(PATH=f"{FAKES}:{ws.env['PATH']}", FAKE_SMI_GPUS=str(tmp_path / "gpus.csv"))
    return ws


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["qwen_chatt", "MMBench_DEV_EN"], "did you mean: qwen_chat"),
        (["qwen_chat", "MMBench_DEV_E"], "did you mean: MMBench_DEV_EN"),
        (["-m", "nope", "-d", "POPE"], "unknown model 'nope'"),
        (["qwen_chat"], "no benchmark given"),
        (["demo-tiny-llava", "DemoMCQ", "--limit", "0"], "--limit must be a positive number"),
        (["demo-tiny-llava", "DemoMCQ", "--limit", "-3"], "--limit must be a positive number"),
        (["demo-tiny-llava", "DemoMCQ", "--env-file", "."], "is a directory"),
        (["demo-tiny-llava", "DemoMCQ", "--env-file", "missing.env"], "cannot read --env-file"),
        (["deepseek_vl2", "MMBench_DEV_EN"], "deepseek_vl2 cannot run from the shipped envs: needs deepseek_vl2: code from github.com/deepseek-ai/DeepSeek-VL2"),
        (["Ovis2.5-9B", "MMBench_DEV_EN"], "needs vllm: VLMEvalKit runs this model only through vLLM"),
        (["MiniCPM-V-4_6", "MMBench_DEV_EN"], "not in VLMEvalKit 0.0.20 (the release every env pins); it needs a newer VLMEvalKit"),
        (["demo-tiny-llava", "DemoMCQ", "--resume", "nowhere"], "not a spectravenv run"),
    ],
)
def test_bad_input(ws, args, needle):
    assert needle in one_line_error(ws.run("eval", *args))
    assert not (ws.home / "envs").exists(), "nothing may be built for a bad request"
    assert not (ws.cwd / "outputs").exists(), "no run folder is made for a bad request"


def test_output_dir_that_is_a_file(ws):
    (ws.cwd / "outputs").write_text("not a folder")
    assert "is a file" in one_line_error(ws.run("eval", "demo-tiny-llava", "DemoMCQ"))


def test_a_gpu_that_does_not_exist(fake_gpus):
    msg = one_line_error(fake_gpus.run("eval", "demo-tiny-llava", "DemoMCQ", "--gpus", "0,5"))
    assert "GPU 5 does not exist here (visible GPUs: 0, 1)" in msg


def test_no_gpu_for_a_gpu_model_says_what_it_needs(ws):
    msg = one_line_error(ws.run("eval", "qwen_chat", "MMBench_DEV_EN"))
    assert "qwen_chat needs a GPU with >= 24 GB free" in msg


def test_a_model_too_big_for_the_free_memory(fake_gpus):
    msg = one_line_error(fake_gpus.run("eval", "llava_v1.5_13b", "POPE", "--gpus", "1"))
    assert "needs 45 GB of GPU memory on one GPU" in msg and "at most 10 GB free" in msg


def test_dry_run_prints_the_plan_without_a_gpu(ws):
    proc = ws.run("eval", "qwen_chat", "MMBench_DEV_EN", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "qwen_chat" in proc.stdout and "tf433" in proc.stdout and "MMBench_DEV_EN" in proc.stdout
    assert "needs a GPU with >= 24 GB free" in proc.stdout
    assert f"run folder: would write {ws.cwd / 'outputs'}/<timestamp>" in proc.stdout
    assert not (ws.cwd / "outputs").exists()


def test_dry_run_on_eight_gpus_shows_the_placement(fake_gpus, tmp_path):
    (tmp_path / "gpus.csv").write_text(h100s(8))
    proc = fake_gpus.run(
        "eval", "qwen_chat", "llava_v1.5_13b", "InternVL2-76B", "MMBench_DEV_EN", "--dry-run"
    )
    assert proc.returncode == 0, proc.stderr
    assert "expected makespan" in proc.stdout
    assert 'device_map="auto"' in proc.stdout  # the 76B model spans GPUs


def test_the_seed_matrix_plans_all_168_pairs(ws):
    """The old system's 7 models x 24 benchmarks: every pair planned, none refused or left out
    (one VLMEvalKit release in every env, so tf433 models get the Korean sets too)."""
    from .test_catalog import SEED_433, SEED_437, SEED_BENCHMARKS

    seed = sorted(SEED_433 | SEED_437) + SEED_BENCHMARKS
    proc = ws.run("eval", *seed, "--dry-run", "--assume-gpus", "8x80")
    assert proc.returncode == 0, proc.stderr
    assert "8 x assumed 80 GB GPU" in proc.stdout and "expected makespan" in proc.stdout
    assert "left out" not in proc.stdout and "cannot run" not in proc.stdout
    assert "24 benchmarks x 7 models = 168 pairs: 168 to run" in proc.stdout
    # Eight GPUs, seven models: the eighth GPU starts a second worker of the longest model.
    [first] = [line for line in proc.stdout.splitlines() if line.startswith("first workers:")]
    workers = [w.split(" on GPU ")[0] for w in first.removeprefix("first workers: ").split(", ")]
    assert len(workers) == 8 and len(set(workers)) == 7
    msg = one_line_error(ws.run("eval", *seed, "--assume-gpus", "8x80"))
    assert "use it with --dry-run" in msg
