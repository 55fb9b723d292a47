"""The end of an `eval`: the run's status in run.json, measured speeds into the cost model, the
report, and the exit code."""

from __future__ import annotations

import time

from spectravenv.plan import stats
from spectravenv.run import events
from spectravenv.run.state import INTERRUPTED, Eval


def finish(st: Eval, *, interrupted: bool) -> int:
    from spectravenv.report import write as report

    outs = events.outcomes(st.run)
    # A pair left "running" was cut short: it counts as not done, like a failed one.
    failed = [o for o in outs.values() if o.status in ("failed", "running")]
    st.manifest["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    st.manifest["status"] = "interrupted" if interrupted else ("failed" if failed else "finished")
    st.run.write_manifest(st.manifest)
    stats.record(st.paths, st.run, warn=lambda m: st.say(f"spectravenv: warning: {m}"))
    st.out.write(report.write_all(st.run, st.catalog) + "\n")
    st.out.write(f"\nresults: {st.run.path / 'results'}\nreport:  {st.run.path / report.REPORT}\n")
    if interrupted:
        return INTERRUPTED
    return 1 if failed else 0

