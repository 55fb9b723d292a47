"""GPU inventory and selection from canned nvidia-smi output (the machine has no GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spectravenv import gpus
from spectravenv.errors import SpectravenvError

from .gpu_fixtures import MIG_NA, ONE_A100, h100s

FAKE = Path(__file__).parent / "fakes" / "nvidia-smi"


def test_parse_zero_one_and_eight_gpus():
    assert gpus.parse_query("") == []
    [a100] = gpus.parse_query(ONE_A100)
    assert (a100.index, a100.name, a100.memory_total_mb, a100.memory_free_mb) == (
        0,
        "NVIDIA A100-SXM4-40GB",
        40960,
        40338,
    )
    assert a100.driver == "535.104.05" and round(a100.free_gb) == 39
    eight = gpus.parse_query(h100s(8))
    assert [g.index for g in eight] == list(range(8))
    assert len({g.uuid for g in eight}) == 8


def test_unavailable_fields_do_not_crash():
    [mig] = gpus.parse_query(MIG_NA)
    assert mig.memory_total_mb == 0 and mig.uuid.startswith("MIG-")


def test_query_runs_the_tool_and_marks_busy_gpus(tmp_path, monkeypatch):
    (tmp_path / "gpus.csv").write_text(h100s(2, [81000, 20000]))
    (tmp_path / "apps.csv").write_text("GPU-00000001-aaaa-bbbb-cccc-000000000001, 4242\n")
    monkeypatch.setenv("FAKE_SMI_GPUS", str(tmp_path / "gpus.csv"))
    monkeypatch.setenv("FAKE_SMI_APPS", str(tmp_path / "apps.csv"))
    found = gpus.query(str(FAKE))
    assert [g.busy_pids for g in found] == [(), (4242,)]
    assert found[1].memory_free_mb == 20000


def test_no_driver_or_no_tool_means_no_gpu(tmp_path, monkeypatch):
    monkeypatch.delenv("FAKE_SMI_GPUS", raising=False)
    assert gpus.query(str(FAKE)) == []  # installed, but "couldn't communicate with the driver"
    assert gpus.query(str(tmp_path / "absent")) == []


@pytest.mark.parametrize(
    ("cvd", "expected"),
    [
        (None, [0, 1, 2, 3, 4, 5, 6, 7]),
        ("2,3", [2, 3]),
        ("5,1", [5, 1]),  # CUDA's order is the variable's order
        ("GPU-00000006", [6]),  # UUID prefix, as CUDA accepts
        ("3,9,4", [3]),  # CUDA stops at the first entry that names no device
        ("", []),
        ("-1", []),
    ],
)
def test_inherited_cuda_visible_devices(cvd, expected):
    env = {} if cvd is None else {"CUDA_VISIBLE_DEVICES": cvd}
    assert [g.index for g in gpus.visible(gpus.parse_query(h100s(8)), env)] == expected


def test_select_maps_positions_inside_an_allocation():
    # Inside a Slurm allocation of physical GPUs 4 and 6, "--gpus 1" is the second of them.
    allowed = gpus.visible(gpus.parse_query(h100s(8)), {"CUDA_VISIBLE_DEVICES": "4,6"})
    assert [g.index for g in gpus.select(allowed, "1")] == [6]
    assert [g.index for g in gpus.select(allowed, "0,1")] == [4, 6]


def test_select_a_gpu_that_does_not_exist_is_a_clear_error():
    allowed = gpus.parse_query(h100s(2))
    with pytest.raises(SpectravenvError, match=r"GPU 5 does not exist here \(visible GPUs: 0, 1\)"):
        gpus.select(allowed, "0,5")
    with pytest.raises(SpectravenvError, match="visible GPUs: none"):
        gpus.select([], "0")
