"""The one door to HTTP for what spectravenv downloads itself: benchmark TSVs from the hosts
VLMEvalKit names. (Wheels come through pip, `envs/wheelhouse.py`; checkpoints through the env's
huggingface_hub, `runners/prefetch_runner.py`.)

Built on requests, which decides once what hand-written urllib code gets wrong:

- Credentials per host. The caller says which host (`host[:port]`) gets which Authorization
  value; requests drops that header when a redirect leaves the host (`Session.rebuild_auth`), so
  a hub token never reaches the storage host a file is redirected to (whose signed URL needs
  none). urllib copies every header onto the redirected request. ~/.netrc applies per host too.
- Retries. A connection that cannot be made, or a 429/5xx answer, is tried again by urllib3's
  Retry with back-off; a body cut short is continued by this module (below).
- Timeouts: 30 s to connect, 60 s without a byte.
- Resume. A download continues what the partial file holds with a Range request, within the call
  when the connection drops and in a later call after an interruption. `If-Range` carries the
  validator (ETag or Last-Modified) of the answer the part began with, so a file that changed
  since comes back whole; the part's URL and validator are kept beside it (`<part>.json`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from svrunner.files import write_atomic
from urllib3.util import Retry

ATTEMPTS = 4  # per URL, each continuing where the last one stopped
TIMEOUT = (30.0, 60.0)  # seconds to connect, seconds without a byte
CHUNK = 1 << 16
# A dropped line, not an answer: worth another attempt that continues the part.
NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                  urllib3.exceptions.HTTPError, OSError)  # fmt: skip


class Progress(Protocol):
    """What a download reports to (fetch.prefetch.Progress draws it)."""

    def start(self, label: str, total: int | None, done: int = 0) -> None: ...
    def update(self, done: int, force: bool = False) -> None: ...
    def finish(self, note: str) -> None: ...


class DownloadFailed(Exception):
    """No URL gave the file; the message says why, URL by URL (never a credential)."""


class _CutShort(ConnectionError):
    pass


def public_url(url: str) -> str:
    """The URL without user name, password or fragment: what a message or a record may show."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urlunsplit(parts._replace(fragment=""))


def session() -> requests.Session:
    retry = Retry(total=4, connect=3, read=2, status=3, backoff_factor=1.0, raise_on_status=False,
                  status_forcelist=(429, 500, 502, 503, 504), allowed_methods=frozenset({"GET", "HEAD"}))  # fmt: skip
    s = requests.Session()
    s.mount("http://", HTTPAdapter(max_retries=retry))
    s.mount("https://", HTTPAdapter(max_retries=retry))
    # identity: Range offsets count the file's own bytes, never a compressed stream's.
    s.headers.update({"User-Agent": "spectravenv", "Accept-Encoding": "identity"})
    return s


def fetch(urls: Sequence[str], part: Path, progress: Progress, label: str,
          auth: Mapping[str, str] | None = None, attempts: int = ATTEMPTS) -> None:  # fmt: skip
    """Download into `part` from the first URL that answers, continuing what it holds. `auth`:
    host[:port] -> Authorization value, sent to that host only (never along a redirect)."""
    problems = []
    with session() as s:
        for url in urls:
            for attempt in range(attempts):
                try:
                    _attempt(s, url, part, progress, label, auth or {})
                    return
                except requests.HTTPError as e:  # an answer: the next URL, if any, may have it
                    problems.append(f"{public_url(url)}: HTTP {e.response.status_code} {e.response.reason}")
                    break
                except NETWORK_ERRORS as e:
                    if attempt + 1 == attempts:
                        problems.append(f"{public_url(url)}: {_reason(e)}")
                    else:
                        progress.finish(f"interrupted ({_reason(e)}); continuing where it stopped")
                        time.sleep(min(2**attempt, 8))
    raise DownloadFailed("; ".join(problems))


def forget(part: Path) -> None:
    """Delete a partial download and what is recorded about it."""
    part.unlink(missing_ok=True)
    _meta(part).unlink(missing_ok=True)


def _meta(part: Path) -> Path:
    return part.with_name(part.name + ".json")


def _resume_from(part: Path, url: str) -> tuple[int, str | None]:
    """Bytes already in `part` from this very URL, and the validator they came with."""
    try:
        known = json.loads(_meta(part).read_text())
    except (OSError, ValueError):
        return 0, None
    if known.get("url") != url or not part.exists():
        return 0, None
    return part.stat().st_size, known.get("validator")


def _attempt(s: requests.Session, url: str, part: Path, progress: Progress, label: str,
             auth: Mapping[str, str]) -> None:  # fmt: skip
    have, validator = _resume_from(part, url)
    headers = {}
    if urlsplit(url).netloc in auth:
        headers["Authorization"] = auth[urlsplit(url).netloc]
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator:
            headers["If-Range"] = validator  # a changed file comes back whole (200)
    with s.get(url, headers=headers, stream=True, timeout=TIMEOUT) as resp:
        if resp.status_code == 416 and have:  # nothing after what we have: the part is whole
            return
        resp.raise_for_status()
        have, total = _start(resp, part, have)
        validator = resp.headers.get("ETag") or resp.headers.get("Last-Modified")
        write_atomic(_meta(part), json.dumps({"url": url, "validator": validator, "total": total}) + "\n")
        progress.start(label, total, have)
        with part.open("ab" if have else "wb") as fh:
            for chunk in resp.raw.stream(CHUNK, decode_content=False):
                fh.write(chunk)
                have += len(chunk)
                progress.update(have)
    if total is not None and have < total:
        raise _CutShort(f"the connection closed after {have} of {total} bytes")


def _start(resp: requests.Response, part: Path, have: int) -> tuple[int, int | None]:
    """Where the body starts in the file, and the file's whole size (None: unknown)."""
    if resp.status_code != 206:  # the whole file (the server ignores ranges, or it changed)
        length = resp.headers.get("Content-Length")
        return 0, int(length) if length else None
    m = re.match(r"bytes (\d+)-\d+/(\d+|\*)", resp.headers.get("Content-Range", ""))
    if not m or int(m.group(1)) != have:
        forget(part)  # not the range asked for: start again
        raise _CutShort("the server answered another range than asked; starting again")
    return have, int(m.group(2)) if m.group(2) != "*" else None


def _reason(exc: BaseException) -> str:
    """A dropped line in a few words: requests nests the cause in a long message."""
    text = str(exc)
    errno = re.search(r"\[Errno -?\d+\] ([^'\")\]]+)", text)
    if errno:
        return errno.group(1).strip()
    if isinstance(exc, requests.Timeout) or "timed out" in text:
        return "timed out"
    if "IncompleteRead" in text or "Connection broken" in text:
        return "the connection broke mid-file"
    return (text or type(exc).__name__)[:200]
