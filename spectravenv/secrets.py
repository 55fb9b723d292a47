"""Secrets from a `.env` file: handed to child processes only, masked wherever they could appear.

The file is parsed by python-dotenv, exactly as VLMEvalKit itself reads `.env` files (quotes,
`export`, trailing comments, multi-line values). Masking is `svrunner.redact`, the same code the
runner applies to every event it writes and the Slurm log filter applies to the runner's output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from svrunner import redact

from .errors import SpectravenvError


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
    import io

    from dotenv import dotenv_values

    # A line without "=" comes back as None: nothing to pass on (python-dotenv ignores it too).
    parsed = dotenv_values(stream=io.StringIO(text))  # the defaults VLMEvalKit uses
    return Secrets({k: v for k, v in parsed.items() if v is not None}, path)
