"""Sample counts from the TSVs on disk: the real number of rows replaces the catalog's estimate.

Most of VLMEvalKit's ~700 datasets were never downloaded where the catalog was made, so their
`samples` is a planning guess (marked `samples_estimated`). Once a benchmark's TSV is in
$LMUData (`spectravenv prefetch`, or an earlier run), its rows are counted, the way VLMEvalKit's
pandas reads them, and the count is kept in $SPECTRAVENV_HOME/cache/tsv-rows.json by the file's
path, size and modification time: a TSV is read once, and again only when it changes.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import sys
from pathlib import Path

from svrunner.files import write_json

from spectravenv.catalog.entries import Benchmark
from spectravenv.paths import Paths

CACHE_NAME = "tsv-rows.json"


def cache_file(paths: Paths) -> Path:
    return paths.home / "cache" / CACHE_NAME


def count_rows(path: Path) -> int:
    """Data rows of a TSV as pandas' read_csv(sep='\\t') sees them: quoted fields may hold tabs
    and newlines, blank lines are skipped, the first line is the header."""
    csv.field_size_limit(sys.maxsize)  # base64 images make cells of megabytes
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        rows = sum(1 for row in csv.reader(f, delimiter="\t") if row)
    return max(rows - 1, 0)


def tsv_of(bench: Benchmark, paths: Paths, listed: set[str]) -> Path | None:
    """The benchmark's TSV if it is on disk: a custom set's own file, or $LMUData/<name>.tsv
    (`listed` holds the names in $LMUData, read once: a stat per benchmark is slow on NFS)."""
    if bench.builtin:
        return None  # made by the runner, of a fixed size
    if bench.tsv is not None:
        return bench.tsv if bench.tsv.is_file() else None
    name = f"{bench.name}.tsv"
    return paths.data_root / name if name in listed else None


def _read_cache(path: Path) -> dict[str, list[int]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}  # none yet, or unreadable: counted again, never an error
    return data if isinstance(data, dict) else {}


def counted(benchmarks: dict[str, Benchmark], paths: Paths) -> dict[str, Benchmark]:
    """The benchmarks, those with a TSV on disk carrying its row count as `samples`."""
    try:
        listed = set(os.listdir(paths.data_root))
    except OSError:
        listed = set()
    found = {n: p for n, b in benchmarks.items() if (p := tsv_of(b, paths, listed)) is not None}
    if not found:
        return benchmarks
    cache = _read_cache(cache_file(paths))
    changed = False
    out = dict(benchmarks)
    for name, path in found.items():
        st = path.stat()
        key, stamp = str(path.resolve()), [st.st_size, st.st_mtime_ns]
        if cache.get(key, [None, None])[:2] != stamp:
            cache[key], changed = [*stamp, count_rows(path)], True
        out[name] = dataclasses.replace(benchmarks[name], samples=cache[key][2], samples_estimated=False)
    if changed:
        # A home we cannot write loses only the cache: the counts are right for this process.
        with contextlib.suppress(OSError):
            write_json(str(cache_file(paths)), cache)
    return out
