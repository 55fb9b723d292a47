"""Where VLMEvalKit downloads an official dataset from: the job file's url and md5 (runs inside
the env; stdlib only).

An official name's TSV is md5-checked by VLMEvalKit against its class's `DATASET_MD5` and
downloaded from `DATASET_URL` when missing or different. The catalog holds the same pair for
every official benchmark, and a user may override them in spectravenv.toml (a lab's mirror, a
re-packed file); `spectravenv prefetch` uses them. So that a run uses them too, they are written
into the dataset class's tables in memory before `build_dataset`: VLMEvalKit then downloads from
that URL and checks that md5 itself. No env file is touched (uv hardlinks them to its cache).
"""

from __future__ import annotations

from typing import Any


def apply(dataset_classes: list[Any], bench: dict[str, Any]) -> list[str]:
    """Give every class that serves this name the job's url and md5; returns the classes changed."""
    name, url, md5 = bench["name"], bench.get("url"), bench.get("md5")
    if not (url or md5):
        return []
    changed = []
    for cls in dataset_classes:
        try:
            if name not in cls.supported_datasets():
                continue
        except Exception:  # a class whose listing needs more than the name: not ours to fix
            continue
        for table, value in (("DATASET_URL", url), ("DATASET_MD5", md5)):
            mapping = getattr(cls, table, None)
            if value and isinstance(mapping, dict) and mapping.get(name) != value:
                mapping[name] = value
                changed.append(f"{cls.__name__}.{table}")
    return changed
