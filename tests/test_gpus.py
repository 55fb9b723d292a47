"""GPU inventory and selection from canned nvidia-smi output (the machine has no GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spectravenv.errors import SpectravenvError
from spectravenv.plan import gpus, jobs

from .gpu_fixtures import (
    A100_MIG_LIST,
    A100_MIG_LIST_OLD,
    A100_MIG_QUERY,
    FREE_NA,
    MIG_NA,
    ONE_A100,
    h100s,
)

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


def test_unavailable_memory_is_unknown_not_zero():
    [mig] = gpus.parse_query(MIG_NA)
    assert mig.memory_total_mb == 0 and mig.memory_free_mb is None and mig.uuid.startswith("MIG-")
    [a10] = gpus.parse_query(FREE_NA)
    # Free memory unknown: planned with the total (nothing of ours runs on it yet), and said so.
    assert not a10.free_known and round(a10.free_gb) == round(a10.total_gb) == 22
    need, why = jobs.gpu_need(_model(20), [a10])
    assert need == 1, why
    [note] = gpus.memory_notes([a10])
    assert "no free memory for GPU 0 (22 GB)" in note and "planning with their total memory" in note
    assert gpus.memory_notes(gpus.parse_query(ONE_A100)) == []


def _model(gb: float):
    from spectravenv.catalog.entries import Model

    return Model(name="m", env="tf437", gpu_memory_gb=gb)


def _fake(tmp_path, monkeypatch, query: str, listing: str | None = None) -> Path:
    (tmp_path / "gpus.csv").write_text(query)
    monkeypatch.setenv("FAKE_SMI_GPUS", str(tmp_path / "gpus.csv"))
    if listing is not None:
        (tmp_path / "list.txt").write_text(listing)
        monkeypatch.setenv("FAKE_SMI_LIST", str(tmp_path / "list.txt"))
    monkeypatch.setenv("FAKE_SMI_LOG", str(tmp_path / "calls.log"))
    return tmp_path / "calls.log"


def test_query_reads_memory_and_mig_devices_and_readings_ask_once(tmp_path, monkeypatch):
    calls = _fake(tmp_path, monkeypatch, h100s(2, [81000, 20000]))
    found = gpus.query(str(FAKE))
    assert [g.memory_free_mb for g in found] == [81000, 20000] and all(g.mig is None for g in found)
    asked = calls.read_text().splitlines()
    assert len(asked) == 2 and "--query-gpu" in asked[0] and asked[1] == "-L"
    # While the run goes, the dispatcher re-reads free memory with one call, and nothing else.
    calls.write_text("")
    assert [g.memory_free_mb for g in gpus.readings(str(FAKE))] == [81000, 20000]
    assert len(calls.read_text().splitlines()) == 1


def test_a_failed_reading_is_an_error_not_an_empty_machine(tmp_path, monkeypatch):
    _fake(tmp_path, monkeypatch, "0, GPU-x, broken\n")
    with pytest.raises(SpectravenvError, match="cannot parse nvidia-smi output"):
        gpus.readings(str(FAKE))
    monkeypatch.delenv("FAKE_SMI_GPUS")
    with pytest.raises(SpectravenvError, match="nvidia-smi failed: NVIDIA-SMI has failed"):
        gpus.readings(str(FAKE))


@pytest.mark.parametrize("listing", [A100_MIG_LIST, A100_MIG_LIST_OLD], ids=["R470+", "R450"])
def test_mig_devices_take_the_place_of_their_gpu(tmp_path, monkeypatch, listing):
    _fake(tmp_path, monkeypatch, A100_MIG_QUERY, listing)
    found = gpus.query(str(FAKE))
    assert [g.label for g in found] == ["0/mig0", "0/mig1", "0/mig2", "0/mig3", "1"]
    big, small = found[0], found[1]
    assert big.total_gb == 40 and small.total_gb == 10 and not small.free_known
    assert "MIG 1g.10gb" in small.name and big.uuid.startswith("MIG-")
    whole = found[-1]
    assert whole.free_known and whole.uuid.startswith("GPU-")
    # Every MIG UUID in CUDA_VISIBLE_DEVICES resolves, in the variable's order.
    cvd = ",".join(g.uuid for g in (found[2], found[0]))
    assert gpus.visible(found, {"CUDA_VISIBLE_DEVICES": cvd}) == [found[2], found[0]]
    # A 9 GB model fits a 1g.10gb device (memory unknown: its total), a 30 GB one the 3g.40gb.
    assert jobs.gpu_need(_model(9), [small])[0] == 1
    with pytest.raises(SpectravenvError, match="at most 10 GB free"):
        jobs.gpu_need(_model(30), [small])


def test_a_mig_allocation_is_a_pool_not_nothing(tmp_path, monkeypatch):
    """Inside a Slurm or container allocation of MIG devices, CUDA_VISIBLE_DEVICES holds MIG
    UUIDs (the old form under R450 drivers); abbreviated, as CUDA allows."""
    _fake(tmp_path, monkeypatch, A100_MIG_QUERY, A100_MIG_LIST)
    found = gpus.query(str(FAKE))
    for cvd, labels in (("MIG-feb88891-0321-5fef-9c87-d4af3b54259e", ["0/mig1"]),
                        ("MIG-a257,MIG-50f1", ["0/mig2", "0/mig3"]),
                        ("MIG-a257,1", ["0/mig2", "1"])):  # fmt: skip
        assert [g.label for g in gpus.visible(found, {"CUDA_VISIBLE_DEVICES": cvd})] == labels
    # An index names a whole GPU: a MIG-split GPU has none (CUDA's own rule).
    assert gpus.visible(found, {"CUDA_VISIBLE_DEVICES": "0"}) == []
    _fake(tmp_path, monkeypatch, A100_MIG_QUERY, A100_MIG_LIST_OLD)
    old = gpus.query(str(FAKE))
    cvd = "MIG-GPU-7fdaf0a5-179b-f636-d15d-daf243e3ff16/7/0"
    assert [g.label for g in gpus.visible(old, {"CUDA_VISIBLE_DEVICES": cvd})] == ["0/mig1"]


def test_children_get_indices_for_gpus_and_uuids_for_mig_devices(tmp_path, monkeypatch):
    """VLMEvalKit parses CUDA_VISIBLE_DEVICES as integers (vlmeval/smp/misc.py
    get_cuda_visible_devices, run.py get_gpu_list): whole GPUs go by index in PCI order; a MIG
    device has no index, CUDA takes only its UUID."""
    from spectravenv.paths import Paths
    from spectravenv.run.jobfile import child_env
    from spectravenv.secrets import Secrets

    _fake(tmp_path, monkeypatch, A100_MIG_QUERY, A100_MIG_LIST)
    found = gpus.query(str(FAKE))
    paths = Paths.from_env({"SPECTRAVENV_HOME": str(tmp_path / "home"), "HOME": str(tmp_path)}, cwd=tmp_path)
    env = child_env({}, paths, Secrets(), [found[-1]], [])
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    assert child_env({}, paths, Secrets(), [found[1]], [])["CUDA_VISIBLE_DEVICES"] == found[1].uuid
    assert child_env({}, paths, Secrets(), [], [])["CUDA_VISIBLE_DEVICES"] == ""


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


def test_dry_run_plans_on_a_mig_allocation_and_on_unknown_free_memory(ws, tmp_path):
    """A MIG allocation was an empty pool, and "[N/A]" free memory 0 GB (nothing fitted)."""
    (tmp_path / "gpus.csv").write_text(A100_MIG_QUERY)
    (tmp_path / "list.txt").write_text(A100_MIG_LIST)
    ws.env.update(PATH=f"{FAKE.parent}:{ws.env['PATH']}", FAKE_SMI_GPUS=str(tmp_path / "gpus.csv"),
                  FAKE_SMI_LIST=str(tmp_path / "list.txt"),
                  CUDA_VISIBLE_DEVICES="MIG-feb88891-0321-5fef-9c87-d4af3b54259e,MIG-a25704ba")  # fmt: skip
    proc = ws.run("eval", "demo-tiny-llava", "DemoMCQ", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "GPUs: 2 x NVIDIA A100-SXM4-80GB MIG 1g.10gb (10/10 GB free each)" in proc.stdout
    assert "first workers: demo-tiny-llava on GPU 0/mig1" in proc.stdout
    assert "nvidia-smi reports no free memory for GPU 0/mig1 (10 GB), 0/mig2 (10 GB)" in proc.stdout

    (tmp_path / "gpus.csv").write_text(FREE_NA)
    del ws.env["FAKE_SMI_LIST"], ws.env["CUDA_VISIBLE_DEVICES"]
    proc = ws.run("eval", "demo-tiny-llava", "DemoMCQ", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "0: NVIDIA A10G (22?/22 GB free)" in proc.stdout and "cannot run" not in proc.stdout
    assert "planning with their total memory" in proc.stdout
