"""The marker a finished build leaves in its folder (an env, an add-on): what was built from
what. A folder without one is a build that never finished; the marker is written last, just
before the folder is renamed into place."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from svrunner.files import write_json

MARKER = ".spectravenv-env.json"


def read(folder: Path) -> dict[str, Any] | None:
    try:
        return json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None


def exists(folder: Path) -> bool:
    return (folder / MARKER).exists()


def write(folder: Path, data: dict[str, Any]) -> None:
    write_json(folder / MARKER, data)
