"""Secrets from a `.env` file: handed to child processes only, masked wherever they could appear.

The file is parsed by python-dotenv, exactly as VLMEvalKit itself reads `.env` files (quotes,
`export`, trailing comments, multi-line values). A statement python-dotenv cannot parse (an
unclosed quote, a space inside a name) is an error naming the file and line: python-dotenv would
only log a warning and drop it, and a job would then run without that key, or with the lines after
an unclosed quote swallowed into one value. Masking is `svrunner.redact`, the same code the
runner applies to every event it writes and the Slurm log filter applies to the runner's output.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream
from svrunner import redact

from spectravenv.errors import SpectravenvError


@dataclass(frozen=True)
class Secrets:
    values: dict[str, str] = field(default_factory=dict)
    source: Path | None = None

    @property
    def names(self) -> list[str]:
        return sorted(self.values)

    @property
    def redactor(self) -> redact.Redactor:
        return redact.Redactor(self.values.values())

    def redact(self, text: str) -> str:
        return self.redactor.text(text)

    def warnings(self) -> list[str]:
        """Credentials too short to be masked safely: said, by name only."""
        return [
            f"{self.source}: {name} is shorter than {redact.MIN_LENGTH} characters, too short to "
            "be masked in logs; it is passed to the jobs, but a job that prints it shows it"
            for name in redact.short_secret_names(self.values)
        ]


def load(path: Path | None, *, required: bool) -> Secrets:
    """Read a .env file. A missing default file is fine; a named one must be readable."""
    if path is None or (not path.exists() and not required):
        return Secrets()
    try:
        text = path.read_text()
    except IsADirectoryError:
        raise SpectravenvError(f"--env-file {path} is a directory; give a KEY=VALUE file") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise SpectravenvError(f"cannot read --env-file {path}: {reason}") from None
    _check_syntax(path, text)
    # A line without "=" comes back as None: nothing to pass on (python-dotenv ignores it too).
    parsed = dotenv_values(stream=io.StringIO(text))  # the defaults VLMEvalKit uses
    return Secrets({k: v for k, v in parsed.items() if v is not None}, path)


def _check_syntax(path: Path, text: str) -> None:
    """A one-line error at the first statement python-dotenv cannot parse. The statement itself is
    not shown (it may hold a secret), only the name it starts with, when it has one."""
    bad = next((b for b in parse_stream(io.StringIO(text)) if b.error), None)
    if bad is None:
        return
    name = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=", bad.original.string)
    what = f"the statement setting {name.group(1)}" if name else "a statement"
    raise SpectravenvError(
        f"{path}, line {bad.original.line}: python-dotenv cannot parse {what}; write it as "
        "KEY=VALUE on one line, quoting a value that holds spaces, # or quotes (and closing the "
        "quote), or delete the line"
    )
