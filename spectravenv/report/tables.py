"""The result tables: per-model and summary CSV and XLSX files under `results/`.

Deterministic: the same rows give the same bytes (XLSX files carry fixed times), so a rebuilt
report can be checked against the original. pandas and openpyxl are imported here only, when
tables are made, so the CLI starts fast.
"""

from __future__ import annotations

import datetime
import io
import re
import zipfile
from pathlib import Path
from typing import Any

from svrunner.files import write_atomic

from spectravenv.results.rows import Row

PAIR_COLUMNS = [
    "model", "env", "benchmark", "status", "metric", "value", "ci_low", "ci_high", "se",
    "ci_method", "samples", "rows_full", "limit", "duration_s", "error", "run", "log",
]  # fmt: skip
# A fixed timestamp inside XLSX files (zip entries and document properties): the same table
# gives the same bytes, so `spectravenv report` can be checked against the original.
FIXED_TIME = (2000, 1, 1, 0, 0, 0)


def _pair_record(r: Row) -> dict[str, Any]:
    iv = r.interval
    return {
        "model": r.model, "env": r.env, "benchmark": r.benchmark, "status": r.status,
        "metric": r.metric or "", "value": r.value,
        "ci_low": round(iv.low, 4) if iv else None, "ci_high": round(iv.high, 4) if iv else None,
        "se": round(iv.se, 4) if iv else None,
        "ci_method": iv.method if iv else (r.interval_note or None),
        "samples": r.samples, "rows_full": r.rows_full, "limit": r.limit,
        "duration_s": round(r.seconds, 1) if r.seconds is not None else None,
        "error": r.error or r.note, "run": r.run, "log": r.log,
    }  # fmt: skip


def _long_records(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Sub-scores on the headline's 0-100 scale (`value`; empty where there is none) and as
    VLMEvalKit wrote them (`raw`), as results.json has them."""
    return [{"model": s["model"], "benchmark": s["benchmark"], "subscore": s["name"], "value": s["value"],
             "raw": s["raw"], "run": s["run"]} for s in doc["subscores"]]  # fmt: skip


def _write_csv(df: Any, path: Path) -> None:
    write_atomic(path, df.to_csv(index=False, lineterminator="\n"))


def _write_xlsx(sheets: dict[str, Any], path: Path) -> None:
    import pandas as pd

    buf = io.BytesIO()
    with pd.ExcelWriter(buf, engine="openpyxl") as xw:
        for name, df in sheets.items():
            df.to_excel(xw, sheet_name=name[:31], index=False)
        props = xw.book.properties
        props.creator = "spectravenv"
        props.created = props.modified = datetime.datetime(*FIXED_TIME)
    write_atomic(path, _stable_zip(buf.getvalue()))


def _stable_zip(data: bytes) -> bytes:
    """Re-pack a zip with fixed entry times (openpyxl stamps the current time on each entry)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
        for info in src.infolist():
            fixed = zipfile.ZipInfo(info.filename, date_time=FIXED_TIME)
            fixed.compress_type, fixed.external_attr = zipfile.ZIP_DEFLATED, info.external_attr
            data = src.read(info.filename)
            if info.filename == "docProps/core.xml":
                # openpyxl stamps "modified" with the time of saving, whatever we set.
                data = re.sub(
                    rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*",
                    rb"\g<1>2000-01-01T00:00:00Z",
                    data,
                )
            dst.writestr(fixed, data)
    return out.getvalue()


def write_tables(rows: list[Row], doc: dict[str, Any], out_dir: Path) -> None:
    import pandas as pd

    results_dir = out_dir / "results"
    pairs = pd.DataFrame([_pair_record(r) for r in rows], columns=PAIR_COLUMNS)
    long = pd.DataFrame(
        _long_records(doc), columns=["model", "benchmark", "subscore", "value", "raw", "run"]
    )
    matrix = matrix_frame(rows)
    for model in sorted({r.model for r in rows}):
        mine = pairs[pairs.model == model]
        _write_csv(mine, results_dir / f"{model}_results.csv")
        _write_xlsx({"results": mine, "subscores": long[long.model == model]},
                    results_dir / f"{model}_results.xlsx")  # fmt: skip
    _write_csv(pairs, results_dir / "summary.csv")
    _write_xlsx({"matrix": matrix, "pairs": pairs, "long": long}, results_dir / "summary.xlsx")


def matrix_frame(rows: list[Row]) -> Any:
    import pandas as pd

    benches = sorted({r.benchmark for r in rows})
    by_model: dict[str, dict[str, Any]] = {}
    for r in rows:
        by_model.setdefault(r.model, {"model": r.model})[r.benchmark] = r.value
    return pd.DataFrame([by_model[m] for m in sorted(by_model)], columns=["model", *benches])


