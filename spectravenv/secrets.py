"""Secrets from a `.env` file: handed to child processes only, scrubbed from everything we write."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SpectravenvError

_LINE = re.compile(r"^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$")
MASK = "***"


@dataclass(frozen=True)
class Secrets:
    values: dict[str, str] = field(default_factory=dict)
    source: Path | None = None

    def redact(self, text: str) -> str:
        # Longest first, so a secret that contains another is masked whole.
        for value in sorted(self.values.values(), key=len, reverse=True):
            if len(value) >= 4:  # masking "1" or "" would shred ordinary text
                text = text.replace(value, MASK)
        return text

    @property
    def names(self) -> list[str]:
        return sorted(self.values)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value.split(" #", 1)[0].rstrip()  # an unquoted value may carry a trailing comment


def load(path: Path | None, *, required: bool) -> Secrets:
    """Read KEY=VALUE lines. A missing default file is fine; a named one must be readable."""
    if path is None:
        return Secrets()
    if not path.exists() and not required:
        return Secrets()
    try:
        text = path.read_text()
    except IsADirectoryError:
        raise SpectravenvError(f"--env-file {path} is a directory; give a KEY=VALUE file") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise SpectravenvError(f"cannot read --env-file {path}: {reason}") from None
    values: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            # Never echo the line: it may hold a secret.
            raise SpectravenvError(f"{path}:{lineno}: expected KEY=VALUE (line not shown)")
        values[m.group(1)] = _unquote(m.group(2))
    return Secrets(values, path)
