"""Suggestions for a mistyped name: the closest name first, for models and benchmarks alike."""

from __future__ import annotations

import pytest

from spectravenv.catalog import loader
from spectravenv.errors import SpectravenvError, did_you_mean
from spectravenv.paths import Paths

from .conftest import DATA


def suggested(name: str, choices: list[str]) -> list[str]:
    text = did_you_mean(name, choices)
    return text.removeprefix(" (did you mean: ").removesuffix("?)").split(", ") if text else []


def test_a_name_that_starts_with_what_was_typed_comes_first():
    # difflib alone ranks OCRBench (one edit from "MMBench" in its ratio) above every MMBench_*.
    assert suggested("MMBench", ["OCRBench", "MMStar", "MMBench_DEV_EN"])[0] == "MMBench_DEV_EN"
    assert suggested("Qwen2.5-VL-7B", ["Qwen2.5-Omni-7B", "Qwen3.5-27B", "Qwen2.5-VL-7B-Instruct"])[0] == (
        "Qwen2.5-VL-7B-Instruct"
    )


def test_case_and_separators_do_not_count():
    assert suggested("qwen2.5 vl 7b instruct", ["Qwen2.5-VL-7B-Instruct", "Qwen2-VL-7B-Instruct"]) == [
        "Qwen2.5-VL-7B-Instruct", "Qwen2-VL-7B-Instruct"]  # fmt: skip
    assert suggested("mmbench-dev-en", ["MMBench_DEV_EN", "MMBench_DEV_CN"])[0] == "MMBench_DEV_EN"


def test_a_typo_still_finds_the_similar_name_and_nothing_far_is_suggested():
    assert suggested("MMBench_DEV_EM", ["MMBench_DEV_EN", "OCRBench", "POPE"])[0] == "MMBench_DEV_EN"
    assert suggested("zzz", ["MMBench_DEV_EN", "OCRBench", "POPE"]) == []
    assert suggested("", ["MMBench_DEV_EN"]) == []


def test_the_real_catalog_suggests_the_closest_model_and_benchmark():
    cat = loader.load(Paths.from_env({"HOME": "/nonexistent"}, cwd=DATA / "no-config"))
    with pytest.raises(SpectravenvError, match=r"did you mean: Qwen2\.5-VL-7B-Instruct,") as e:
        cat.classify(["Qwen2.5-VL-7B"])
    assert "\n" not in str(e.value)
    with pytest.raises(SpectravenvError, match=r"did you mean: MMBench_DEV_EN,"):
        cat.classify(["mmbench_dev_en_"])
    with pytest.raises(SpectravenvError, match=r"did you mean: MMBench_DEV_EN\b"):
        cat.benchmark("MMBench-DEV-EN")
