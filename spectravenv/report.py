"""Writers: the summary table printed at the end of a run (tables and report: see below)."""

from __future__ import annotations

from . import rundir
from .catalog import Catalog
from .console import duration, table


def write_all(run: rundir.RunDir, catalog: Catalog) -> str:
    outs = rundir.outcomes(run)
    rows = [
        (o.model, o.benchmark, o.status, o.samples if o.samples is not None else "-",
         duration(o.seconds) if o.seconds else "-", o.error[:70])
        for o in sorted(outs.values(), key=lambda o: (o.model, o.benchmark))
    ]  # fmt: skip
    return table(("model", "benchmark", "status", "samples", "time", "error"), rows)
