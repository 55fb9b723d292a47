"""Masking of secret values: one mechanism for the host, the runner and the Slurm log filter.

A secret is masked wherever its value appears: whole, split over several lines (a wrapped
message, a value printed in pieces), inside JSON objects before they are written, and in a
stream cut at arbitrary points (`StreamRedactor` holds back a tail that could be the start of a
secret until it knows). Values shorter than `MIN_LENGTH` characters cannot be masked safely (a
value like "1" or "true" occurs everywhere in ordinary text): they are passed to the child but
not masked, and `short_secret_names` lets the caller warn about them.

Job files never hold a secret either: `seal` replaces values by `${spectravenv-secret:NAME}`
and the runner `unseal`s them from its environment, where the dispatcher put them.

Run as a script (stdlib only) it is the Slurm log filter: `runner ... 2>&1 | python redact.py`,
with the secrets' names in SPECTRAVENV_SECRET_NAMES and their values in its environment.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

MASK = "***"
MIN_LENGTH = 8
SECRET_NAMES_VAR = "SPECTRAVENV_SECRET_NAMES"
_SEAL = re.compile(r"\$\{spectravenv-secret:([A-Za-z_][A-Za-z0-9_]*)\}")
_LOOKS_SECRET = re.compile(r"KEY|TOKEN|SECRET|PASS|AUTH|CRED", re.I)


def _mask(match: re.Match[str]) -> str:
    # Keep the line breaks a split value spanned, so line counts and layout stay intact.
    return re.sub(r"[^\r\n]+", MASK, match.group(0))


class Redactor:
    """Masks a fixed set of values in text and in JSON-like objects."""

    def __init__(self, values: Iterable[str]) -> None:
        kept = sorted({v for v in values if len(v) >= MIN_LENGTH}, key=len, reverse=True)
        self.values: tuple[str, ...] = tuple(kept)
        self.longest = max((len(v) for v in kept), default=0)
        # Longest first, so a secret that contains another is masked whole; a line break may
        # stand between any two characters of a value.
        alternatives = ["[\r\n]*".join(map(re.escape, v)) for v in kept]
        self._pattern = re.compile("|".join(alternatives)) if alternatives else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, s: str) -> str:
        return s if self._pattern is None else self._pattern.sub(_mask, s)

    def obj(self, obj: Any) -> Any:
        """The same object with every string in it (keys too) masked."""
        if self._pattern is None:
            return obj
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {self.obj(k): self.obj(v) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [self.obj(v) for v in obj]
        return obj

    def pending(self, text: str, start: int) -> bool:
        """Could a secret begin at `start` and go on past the end of `text`? (Line breaks may
        stand between its characters, not before its first.) A secret ending there may still be
        the start of a longer one, so it counts too."""
        if text[start] in "\r\n":
            return False
        bare = text[start:].replace("\r", "").replace("\n", "")
        return any(len(v) > len(bare) and v.startswith(bare) for v in self.values)

    def safe_end(self, text: str) -> int:
        """How much of `text` masks the same whatever follows it: everything before the first
        place where a secret may be under way. The scan is the masking's own: matches are final
        unless they may grow into a longer secret, and what lies inside a final match cannot
        start another one."""
        pos = 0
        tail = self._tail_start(text)
        while True:
            match = self._pattern.search(text, pos)
            limit = match.start() if match else len(text)
            for start in range(max(pos, tail), min(limit + 1, len(text))):
                if self.pending(text, start):
                    return start
            if match is None:
                return len(text)
            pos = match.end()

    def _tail_start(self, text: str) -> int:
        """Where the last `longest` characters other than line breaks begin: a secret under way
        at the end of `text` starts there or later."""
        seen, i = 0, len(text)
        while i > 0 and seen < self.longest:
            i -= 1
            seen += text[i] not in "\r\n"
        return i

    def stream(self) -> StreamRedactor:
        return StreamRedactor(self)


class StreamRedactor:
    """Masks a stream fed in arbitrary pieces; what it returns is safe to write at once, and all
    it returns is exactly `Redactor.text` of the whole stream, wherever it was cut."""

    def __init__(self, redactor: Redactor) -> None:
        self.r = redactor
        self.held = ""  # raw text: a secret may be under way in it

    def feed(self, chunk: str) -> str:
        if not self.r:
            return chunk
        text = self.held + chunk
        end = self.r.safe_end(text)
        self.held = text[end:]
        return self.r.text(text[:end])

    def flush(self) -> str:
        out, self.held = self.r.text(self.held), ""
        return out


def from_environment(environ: Mapping[str, str] | None = None) -> Redactor:
    """The redactor for the secrets the dispatcher named in SPECTRAVENV_SECRET_NAMES."""
    env = os.environ if environ is None else environ
    names = [n for n in env.get(SECRET_NAMES_VAR, "").split(",") if n]
    return Redactor(env.get(n, "") for n in names)


def short_secret_names(values: Mapping[str, str]) -> list[str]:
    """Names whose value looks like a credential but is too short to be masked safely."""
    return sorted(
        k for k, v in values.items() if 0 < len(v) < MIN_LENGTH and _LOOKS_SECRET.search(k)
    )


def seal(obj: Any, secrets: Mapping[str, str]) -> Any:
    """Replace secret values inside strings by references the runner resolves (`unseal`)."""
    pairs = sorted(
        ((k, v) for k, v in secrets.items() if len(v) >= MIN_LENGTH), key=lambda kv: -len(kv[1])
    )
    if isinstance(obj, str):
        for name, value in pairs:
            obj = obj.replace(value, "${spectravenv-secret:" + name + "}")
        return obj
    if isinstance(obj, dict):
        return {seal(k, secrets): seal(v, secrets) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [seal(v, secrets) for v in obj]
    return obj


def unseal(obj: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(obj, str):

        def value(m: re.Match[str]) -> str:
            if m.group(1) not in environ:
                raise KeyError(f"secret {m.group(1)} is referenced but not in the environment")
            return environ[m.group(1)]

        return _SEAL.sub(value, obj)
    if isinstance(obj, dict):
        return {unseal(k, environ): unseal(v, environ) for k, v in obj.items()}
    if isinstance(obj, list):
        return [unseal(v, environ) for v in obj]
    return obj


def main() -> None:
    """Copy stdin to stdout, masked; chunks rather than lines, so progress bars still flow."""
    stream = from_environment().stream()
    decoder_in = sys.stdin.buffer
    buf = b""
    while True:
        chunk = os.read(decoder_in.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
        try:
            text, buf = buf.decode("utf-8"), b""
        except UnicodeDecodeError as e:  # a multi-byte character cut by the read
            text, buf = buf[: e.start].decode("utf-8"), buf[e.start :]
            if len(buf) > 8:  # not a cut character: garbage; let it through replaced
                text, buf = text + buf.decode("utf-8", "replace"), b""
        sys.stdout.write(stream.feed(text))
        sys.stdout.flush()
    sys.stdout.write(stream.feed(buf.decode("utf-8", "replace")) + stream.flush())
    sys.stdout.flush()


if __name__ == "__main__":
    main()
