"""VLMEvalKit parity: for the demo model, spectravenv's predictions and score files equal what
VLMEvalKit's own `vlmeval/run.py` writes for the same model registered in `supported_VLM`, the
same TSVs and the same judge, cell for cell.

Heavy: the real tf437 env, run.py run by its Python (tests/data/run_py_parity.py).
"""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import openpyxl
import pytest

from .conftest import DATA, REPO, Workspace

pytestmark = pytest.mark.heavy

MODEL = "demo-tiny-llava"
DATASETS = ("DemoMCQ", "DemoShapes")


def cells(path: Path) -> dict[str, list[list[object]]]:
    wb = openpyxl.load_workbook(path, read_only=True)
    try:
        return {ws.title: [list(r) for r in ws.iter_rows(values_only=True)] for ws in wb.worksheets}
    finally:
        wb.close()


def test_predictions_and_scores_equal_vlmeval_run_py(demo_ws: Workspace):
    proc = demo_ws.run("eval", MODEL, *DATASETS, "--run-name", "parity")
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    run = demo_ws.cwd / "outputs" / "parity"
    manifest = json.loads((run / "run.json").read_text())
    env = manifest["envs"]["tf437"]
    python = demo_ws.home / "envs" / f"tf437-{env['key']}" / "bin" / "python"

    vk = demo_ws.cwd / "run_py"
    ran = subprocess.run(
        [str(python), str(DATA / "run_py_parity.py"), str(REPO / "runners"),
         str(demo_ws.home / "assets"), str(vk), *DATASETS],
        env=demo_ws.env, cwd=demo_ws.cwd, capture_output=True, text=True, timeout=900,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stdout[-3000:] + ran.stderr[-3000:]

    for ds in DATASETS:
        ours, theirs = run / MODEL / ds, vk / MODEL
        pred = cells(ours / f"{MODEL}_{ds}.xlsx")
        [sheet] = pred.values()
        header = sheet[0]
        assert "prediction" in header and len(sheet) == 1 + 24, (
            f"{ds}: {header}, {len(sheet) - 1} rows"
        )
        assert pred == cells(theirs / f"{MODEL}_{ds}.xlsx"), (
            f"{ds}: predictions differ from run.py's"
        )
        judged = f"{MODEL}_{ds}_exact_matching_result.xlsx"
        assert cells(ours / judged) == cells(theirs / judged), f"{ds}: judged rows differ"
        score = f"{MODEL}_{ds}_acc.csv"
        assert (ours / score).read_text() == (theirs / score).read_text(), (
            f"{ds}: score files differ"
        )
        # And the tables are made from that very score file.
        with open(run / "results" / "summary.csv", newline="") as fh:
            [row] = [r for r in csv.DictReader(fh) if r["benchmark"] == ds]
        overall = next(csv.DictReader((ours / score).read_text().splitlines()))["Overall"]
        assert float(row["value"]) == pytest.approx(float(overall) * 100, abs=0.005), (ds, row)
