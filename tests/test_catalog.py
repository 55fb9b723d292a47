"""The catalog: shipped content, user overrides, name lookup and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from spectravenv.catalog import loader
from spectravenv.errors import SpectravenvError
from spectravenv.paths import SHIPPED_LOCKS, Paths

SERVED = "wrapper ran against a loopback OpenAI-compatible server"  # what the API selftest checks
SEED_433 = {"qwen_chat", "mPLUG-Owl2", "monkey-chat", "XComposer", "XComposer2"}
SEED_437 = {"llava_v1.5_7b", "llava_v1.5_13b"}
SEED_BENCHMARKS = """MMBench_DEV_EN TextVQA_VAL GQA_TestDev_Balanced MMMU_DEV_VAL DocVQA_VAL
ChartQA_TEST InfoVQA_VAL OCRBench AI2D_TEST ScienceQA_VAL POPE HallusionBench MMStar RealWorldQA
VisOnlyQA-VLMEvalKit VizWiz SEEDBench_IMG BLINK MMBench_DEV_KO SEEDBench_IMG_KO MME
NaturalBenchDataset MMStar_KO CCOCR_MultiLanOcr_Korean""".split()


def load(tmp_path: Path, user_toml: str | None = None, xdg_toml: str | None = None):
    cwd = tmp_path / "cwd"
    cwd.mkdir(exist_ok=True)
    xdg = tmp_path / "xdg"
    if user_toml is not None:
        (cwd / "spectravenv.toml").write_text(user_toml)
    if xdg_toml is not None:
        (xdg / "spectravenv").mkdir(parents=True, exist_ok=True)
        (xdg / "spectravenv" / "spectravenv.toml").write_text(xdg_toml)
    env = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(xdg)}
    return loader.load(Paths.from_env(env, cwd=cwd))


def test_shipped_catalog_has_the_seed(tmp_path):
    cat = load(tmp_path)
    assert {n for n, m in cat.models.items() if m.env == "tf433"} >= SEED_433
    assert {n for n, m in cat.models.items() if m.env == "tf437"} >= SEED_437
    assert any(n.startswith("InternVL2-") and m.env == "tf437" for n, m in cat.models.items())
    assert set(SEED_BENCHMARKS) <= set(cat.benchmarks)
    assert cat.envs["tf437"].transformers == "4.37.2"
    assert cat.envs["tf433"].transformers.startswith("4.33.")
    for env in cat.envs.values():
        assert env.lock.parent == SHIPPED_LOCKS
        assert env.exclude_newer, "a lock without a resolution date cannot be re-made exactly"
    for b in SEED_BENCHMARKS:
        assert cat.benchmarks[b].kind in {"MCQ", "VQA", "Y/N", "OCR"}
    # Every local model needs a GPU except the demo; API models need none.
    assert [m.name for m in cat.models.values() if m.cpu and m.kind == "local"] == ["demo-tiny-llava"]
    assert all(m.cpu and m.env == "api" for m in cat.models.values() if m.kind == "api")


def test_every_registry_name_has_an_env_or_says_what_it_needs(tmp_path):
    import csv

    from .conftest import REPO

    cat = load(tmp_path)
    registry = list(csv.DictReader((REPO / "data/registry/vlmeval_models.tsv").open(), delimiter="\t"))
    assert len(registry) == 554
    for row in registry:
        m = cat.models[row["name"]]
        assert m.env in cat.envs and m.kind == row["kind"]
        assert m.evidence, row["name"]
        if m.blocked:
            assert m.verified == "lock builds"
            # It says what to install or add, or why nothing can.
            assert any(w in m.blocked for w in ("add it", "needs", "no env", "newer VLMEvalKit")), m.blocked
        elif m.kind == "api":
            assert m.verified in ("class imports", SERVED)
        else:
            assert m.verified in ("class imports", "wrapper ran on a tiny checkpoint")
    runnable = [r["name"] for r in registry if not cat.models[r["name"]].blocked]
    assert len(runnable) >= 400
    for name in ("Qwen2.5-VL-7B-Instruct", "Qwen3-VL-8B-Instruct", "InternVL3-8B", "llava_onevision_qwen2_7b_ov",
                 "MiniCPM-V-2_6", "Gemma3-12B", "Llama-3.2-11B-Vision-Instruct", "Idefics3-8B-Llama3", "SmolVLM2",
                 "molmo-7B-D-0924", "Phi-3.5-Vision", "Ovis2-8B", "varco-vision-2-14b", "Aria", "Pixtral-12B",
                 "GPT4o", "Claude3-5V_Sonnet", "GeminiPro1-5", "qwen_chat", "Qwen3.5-27B"):  # fmt: skip
        assert name in cat.models, name


def test_the_generated_catalog_is_what_its_inputs_give():
    import subprocess
    import sys

    from .conftest import REPO

    proc = subprocess.run([sys.executable, REPO / "scripts" / "gen_catalog.py", "--check"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr


def test_verified_says_what_the_selftest_really_ran_on(tmp_path):
    """'ran on a tiny checkpoint' only where a selftest ran the model's class on one (a local
    model); an API model's wrapper ran against a local stand-in server, and says so."""
    import json

    from .conftest import REPO

    ran: dict[tuple[str, str], set[str]] = {}
    for p in (REPO / "data" / "selftest").glob("*.json"):
        for row in json.loads(p.read_text())["results"]:
            if row["status"] == "ok":
                ran.setdefault((row["env"], row["vlmeval_class"]), set()).add(row["recipe"])
    cat = load(tmp_path)
    generated = [m for m in cat.models.values() if m.vlmeval_class]
    on_tiny = [m for m in generated if m.verified == "wrapper ran on a tiny checkpoint"]
    assert len(on_tiny) > 100
    for m in on_tiny:
        assert m.kind == "local" and (m.env, m.vlmeval_class) in ran, m.name
    served = [m for m in generated if m.verified == SERVED]
    assert "GPT4o" in {m.name for m in served}
    for m in served:
        assert m.kind == "api" and ran[(m.env, m.vlmeval_class)] == {"openai-local"}, m.name
    assert not [m.name for m in generated if m.kind == "api" and "checkpoint" in m.verified]


def test_user_file_adds_and_overrides(tmp_path):
    (tmp_path / "ckpt").mkdir()
    cat = load(
        tmp_path,
        user_toml="""
[models.qwen_chat]
gpu_memory_gb = 20

[models.my-llava]
env = "tf437"
class = "LLaVA"
model_path = "../ckpt"

[models.hub-model]
env = "tf437"
class = "LLaVA"
model_path = "org/some-model"

[benchmarks.MyBench]
tsv = "data/my.tsv"
kind = "MCQ"
""",
    )
    q = cat.models["qwen_chat"]
    assert q.gpu_memory_gb == 20 and q.env == "tf433"  # other fields kept
    mine = cat.models["my-llava"]
    assert mine.cls == "LLaVA" and mine.vlmeval_name is None
    assert Path(mine.kwargs["model_path"]) == (tmp_path / "ckpt").resolve()
    assert cat.models["hub-model"].kwargs["model_path"] == "org/some-model"
    assert cat.benchmarks["MyBench"].tsv == (tmp_path / "cwd" / "data" / "my.tsv").resolve()


def test_working_directory_file_wins_over_user_config(tmp_path):
    cat = load(
        tmp_path,
        xdg_toml='[models."InternVL2-8B"]\ngpu_memory_gb = 10\ngpus = 2\n',
        user_toml='[models."InternVL2-8B"]\ngpu_memory_gb = 30\n',
    )
    assert cat.models["InternVL2-8B"].gpu_memory_gb == 30
    assert cat.models["InternVL2-8B"].gpus == 2


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        (
            "[models.x]\nenv = 'tf437'\ngpu_mem = 3\n",
            "unknown key 'gpu_mem' (did you mean: gpu_memory_gb",
        ),
        ("[model.x]\nenv = 'tf437'\n", "unknown table [model] (did you mean: models"),
        ("[models.x]\nenv = 'tf999'\n", "names env 'tf999', which is not in the catalog"),
        ("[models.x]\ngpus = 2\n", "needs an 'env' key"),
        ("[models.x]\nenv = 'tf437'\ngpus = 'two'\n", "gpus must be an integer"),
        ("[models.x]\nenv = 'tf437'\ngpus = 2\n", 'has gpus = 2 but not multi_gpu = true; only a wrapper that loads with device_map="auto"'),
        ("[models.x\n", "not valid TOML"),
    ],
)
def test_bad_user_file_is_one_clear_error(tmp_path, toml, message):
    with pytest.raises(SpectravenvError, match="spectravenv.toml") as e:
        load(tmp_path, user_toml=toml)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_classify_names_and_suggestions(tmp_path):
    cat = load(tmp_path)
    models, benches = cat.classify(["qwen_chat", "MMBench_DEV_EN", "llava_v1.5_7b", "POPE"])
    assert models == ["qwen_chat", "llava_v1.5_7b"] and benches == ["MMBench_DEV_EN", "POPE"]
    with pytest.raises(SpectravenvError, match=r"did you mean: MMBench_DEV_EN"):
        cat.classify(["MMBench_DEV_E"])
    with pytest.raises(SpectravenvError, match=r"did you mean: qwen_chat"):
        cat.classify(["Qwen_Chat"])


def test_ambiguous_name_asks_for_explicit_option(tmp_path):
    cat = load(tmp_path, user_toml="[benchmarks.qwen_chat]\ntsv = 'x.tsv'\n")
    with pytest.raises(SpectravenvError, match="both a model and a benchmark"):
        cat.classify(["qwen_chat"])
