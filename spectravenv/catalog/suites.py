"""Suites: one word for a list of benchmarks (`spectravenv eval MODEL openvlm`).

Shipped ones live in `catalog/data/suites.toml`; a user adds or replaces one in `spectravenv.toml`
as `[suites.NAME] benchmarks = [...]`. A suite may name only benchmarks (not other suites), and
its name may not be a model's or a benchmark's: a name on the command line means one thing.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from spectravenv.errors import SpectravenvError, did_you_mean


@dataclass(frozen=True)
class Suite:
    name: str
    benchmarks: tuple[str, ...]
    description: str = ""
    source: Path | None = None  # the file that defines it


def build(name: str, fields: dict[str, Any], benchmarks: Collection[str]) -> Suite:
    """A suite from its table, every benchmark it names checked against the catalog."""
    where = f"{fields['__file__']}: suites.{name}"
    names = fields.get("benchmarks")
    if not names:
        raise SpectravenvError(f"{where} needs a non-empty `benchmarks = [...]` list")
    for b in names:
        if not isinstance(b, str):
            raise SpectravenvError(f"{where}.benchmarks must hold benchmark names (strings), not {b!r}")
        if b not in benchmarks:
            raise SpectravenvError(f"{where} names unknown benchmark {b!r}{did_you_mean(b, benchmarks)}; "
                                   "`spectravenv benchmarks` lists them")  # fmt: skip
    return Suite(name, tuple(dict.fromkeys(names)), fields.get("description", ""), fields["__file__"])


def check_names(suites: dict[str, Suite], models: Collection[str], benchmarks: Collection[str]) -> None:
    """A suite named like a model or a benchmark would make that name mean two things."""
    for s in suites.values():
        for what, names in (("model", models), ("benchmark", benchmarks)):
            if s.name in names:
                raise SpectravenvError(f"{s.source}: suite {s.name!r} has the name of a {what}; "
                                       "give the suite another name")  # fmt: skip
