"""Lock files that never hang: one mechanism on local disks, NFS and Lustre alike.

A lock is a file created with O_EXCL (atomic on local filesystems and on NFSv3+/Lustre, where
flock is unreliable) holding who took it: host, boot, pid, the process's start time, what for and
since when. Only one mechanism exists, so two processes can never disagree about how a path is
locked (a flock user and a lock-file user of one path would deadlock).

Every wait has a timeout; when it runs out, `LockBusy` says who holds the lock and how to clear
it. A lock whose holder is a dead process of this host (same boot; pid gone, or reused by a
process that started later) is stale and is recovered at once. A holder on another host cannot be
checked from here: its lock is reported, never broken.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

STALE_EMPTY_SECONDS = 60.0  # a lock file still empty after this long: its creator died writing it


class LockBusy(Exception):
    """The lock is held by someone else, and the wait ran out."""

    def __init__(self, message: str, holder: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.holder = holder


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str | None:
    """The start time of `pid` in clock ticks since boot (/proc); None if it does not exist or
    has died (a zombie is a dead process its parent has not reaped yet)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if fields and fields[0] in ("Z", "X"):
        return None
    return fields[19] if len(fields) > 19 else ""


def me(what: str) -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "pid": pid,
        "process_start": _process_start(pid),
        "what": what,
        "since": time.time(),
        "token": uuid.uuid4().hex,
    }


def holder_alive(holder: dict[str, Any]) -> bool | None:
    """True / False for a holder on this host; None when it cannot be known (another host)."""
    if holder.get("host") != socket.gethostname():
        return None
    if holder.get("boot_id") and holder.get("boot_id") != _boot_id():
        return False  # this host rebooted since
    started = _process_start(int(holder.get("pid", -1)))
    if started is None:
        return False
    recorded = holder.get("process_start")
    return not (recorded and started and started != recorded)  # a reused pid is not the holder


def read_holder(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as fh:
            data = json.load(fh)
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an unknown process (the lock file is empty or unreadable)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"{holder.get('what', '?')} (pid {holder.get('pid')} on {holder.get('host')}, since {since})"


class FileLock:
    """`with FileLock(path, "building env tf437").hold(timeout=600): ...`"""

    def __init__(self, path: str | os.PathLike[str], what: str) -> None:
        self.path = os.fspath(path)
        self.what = what
        self.token: str | None = None

    def try_acquire(self) -> bool:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        info = me(self.what)
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as fh:
            json.dump(info, fh)
            fh.flush()
            os.fsync(fh.fileno())
        self.token = info["token"]
        return True

    def _stale(self, holder: dict[str, Any] | None) -> bool:
        if holder is None:
            try:
                age = time.time() - os.stat(self.path).st_mtime
            except FileNotFoundError:
                return False  # released meanwhile: just try again
            return age > STALE_EMPTY_SECONDS
        return holder_alive(holder) is False

    def _break(self, judged: dict[str, Any] | None) -> None:
        """Remove a stale lock, unless someone replaced it since we read it."""
        aside = f"{self.path}.stale-{uuid.uuid4().hex[:8]}"
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return
        now = read_holder(aside)
        if (now or {}).get("token") != (judged or {}).get("token"):
            # A fresh lock was taken between our read and the rename: put it back.
            with contextlib.suppress(OSError):
                os.link(aside, self.path)
        os.unlink(aside)

    def acquire(
        self,
        timeout: float,
        *,
        poll: float = 0.2,
        on_wait: Callable[[dict[str, Any] | None], None] | None = None,
        advice: str = "",
    ) -> None:
        deadline = time.monotonic() + timeout
        told = False
        while not self.try_acquire():
            holder = read_holder(self.path)
            if self._stale(holder):
                self._break(holder)
                continue
            if time.monotonic() >= deadline:
                raise LockBusy(self.busy_message(holder, advice), holder)
            if on_wait is not None and not told:
                on_wait(holder)
                told = True
            time.sleep(poll)

    def busy_message(self, holder: dict[str, Any] | None, advice: str = "") -> str:
        alive = holder_alive(holder) if holder else None
        if alive:
            clear = advice or f"wait for it to finish, or stop it (kill {holder['pid']})"
        else:
            clear = f"if that process is gone (its node died, say), remove {self.path}"
        return f"{self.what}: locked by {describe(holder)}; {clear}"

    def release(self) -> None:
        if self.token is None:
            return
        holder = read_holder(self.path)
        if (holder or {}).get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
        self.token = None

    @contextlib.contextmanager
    def hold(self, timeout: float, **kw: Any) -> Iterator[FileLock]:
        self.acquire(timeout, **kw)
        try:
            yield self
        finally:
            self.release()
