"""Lock files that never hang: one mechanism on local disks, NFS and Lustre alike.

A lock is a file holding who took it: host, boot, pid, the process's start time, what for, since
when, its lease and a unique token. It appears complete at once: the record is written to a
private file that is then hard-linked to the lock's name, and `link` fails when the name exists,
atomically on local filesystems and on NFSv3+/Lustre (where flock is unreliable). Only one
mechanism exists, so two processes can never disagree about how a path is locked.

Every wait has a timeout; when it runs out, `LockBusy` says who holds the lock and how to clear it.

Liveness, judged by whoever finds the lock:
- a holder on this host: by its pid (same boot; pid gone, or reused by a process that started
  later, means dead), exact and at once;
- a holder on another host: by its lease. While a lock is held, a thread of its holder touches
  the file every lease/4 seconds; a lock untouched for a whole lease is stale. The age is read on
  the file server's clock (the lock's mtime against the mtime of a file just made in the same
  folder), never against this host's `time.time()`, so NFS clients with skewed clocks agree;
- a lock of another host without a lease (written by an older release) cannot be judged: it is
  reported, never broken.

Removal, by the holder on release or by whoever found the lock stale, goes through one door,
`remove_generation`. A lock file's generation is its token, and tokens are never reused. To remove
generation T, a process first takes `<lock>.break-<T>` (a lock of the same kind), re-reads the
lock, and unlinks it only if it still holds T; then it drops the marker. Why that is safe: while
the marker is held, nobody else can remove generation T (removal needs the marker) and nobody can
create a new generation (the name is taken by T), so the re-read stays true until the unlink; a
process that judged T stale earlier and takes the marker later re-reads another token (or none)
and removes nothing. So a fresh lock is never removed by someone who judged its predecessor, and
at most one process holds a lock at any time: the only assumption is the one every lease makes,
that a holder judged dead (its pid gone, or its lease run out) really is. A marker left by a
remover that died is itself a stale lock, removed the same way (`<marker>.break-<T'>`).
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from . import settings
from .files import read_json

LEASE_VAR = "SPECTRAVENV_LOCK_LEASE"
DEFAULT_LEASE = 120.0  # seconds a lock of a silent holder on another host is still respected
MARKER_LEASE = 30.0  # a removal takes milliseconds; a marker this old was left by a dead remover
STALE_EMPTY_SECONDS = 60.0  # an unreadable lock (older releases wrote the record after creating)
MAX_DEPTH = 3  # markers of markers: each level needs a remover that died in its milliseconds


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


def default_lease(environ: dict[str, str] | None = None) -> float:
    """The lease new locks get: SPECTRAVENV_LOCK_LEASE seconds, default 120."""
    return settings.seconds(LEASE_VAR, DEFAULT_LEASE, environ)


def me(what: str, lease: float | None = None) -> dict[str, Any]:
    pid = os.getpid()
    info = {
        "host": socket.gethostname(),
        "boot_id": _boot_id(),
        "pid": pid,
        "process_start": _process_start(pid),
        "what": what,
        "since": time.time(),
        "token": uuid.uuid4().hex,
    }
    if lease is not None:
        info["lease"] = lease
    return info


def holder_alive(holder: dict[str, Any]) -> bool | None:
    """True / False for a holder on this host; None when its pid cannot be checked (another host)."""
    if holder.get("host") != socket.gethostname():
        return None
    if holder.get("boot_id") and holder.get("boot_id") != _boot_id():
        return False  # this host rebooted since
    started = _process_start(int(holder.get("pid", -1)))
    if started is None:
        return False
    recorded = holder.get("process_start")
    return not (recorded and started and started != recorded)  # a reused pid is not the holder


def server_now(folder: str) -> float | None:
    """Now on the clock of the filesystem that holds `folder`: the mtime of a file made there
    (None when this process may not write there). On NFS the server stamps it, so every client
    compares mtimes against the same clock."""
    try:
        fd, probe = tempfile.mkstemp(prefix=".clock-", dir=folder)
    except OSError:
        return None
    try:
        return os.fstat(fd).st_mtime
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(probe)


class ServerClock:
    """The file server's clock for one folder, read once (a probe file) and only when needed: a
    caller judging many locks of one folder (the units of a pair) makes one probe, not many."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self._offset: float | None = None  # server time minus local monotonic time
        self._unknown = False

    def now(self) -> float | None:
        if self._offset is None and not self._unknown:
            server = server_now(self.folder)
            self._unknown = server is None
            self._offset = None if server is None else server - time.monotonic()
        return None if self._offset is None else self._offset + time.monotonic()


def _age(path: str, clock: ServerClock | None = None) -> float | None:
    """Seconds since `path` was last touched, on its file server's clock (None when that clock
    cannot be read here); FileNotFoundError when it is gone."""
    mtime = os.stat(path).st_mtime
    now = (clock or ServerClock(os.path.dirname(os.path.abspath(path)))).now()
    return None if now is None else now - mtime


def lock_alive(path: str, holder: dict[str, Any] | None, clock: ServerClock | None = None) -> bool | None:
    """Is the lock at `path`, held by `holder` (as read from it), still held? True / False, or
    None when it cannot be known (another host's lock without a lease, or a folder this
    process may not write to, so that the server's clock cannot be read). `clock`: the server
    clock of the lock's folder, when the caller judges several locks there."""
    alive = holder_alive(holder) if holder is not None else None
    if alive is not None:
        return alive
    lease = STALE_EMPTY_SECONDS if holder is None else holder.get("lease")
    if not isinstance(lease, (int, float)):
        return None
    try:
        age = _age(path, clock)
    except FileNotFoundError:
        return False  # released meanwhile
    return None if age is None else age <= float(lease)


def read_holder(path: str) -> dict[str, Any] | None:
    return read_json(path)


def _generation(path: str, holder: dict[str, Any] | None = None) -> str | None:
    """The identity of the lock file now at `path`: its token (an unreadable file of an older
    release: its inode); None when there is none."""
    holder = read_holder(path) if holder is None else holder
    if holder and holder.get("token"):
        return str(holder["token"])
    try:
        return f"ino{os.stat(path).st_ino}"
    except FileNotFoundError:
        return None


def remove_generation(path: str, generation: str, depth: int = 0) -> bool:
    """Unlink the lock at `path` if it is still `generation`; True if this call removed it.

    The one door for removing a lock (see the module docstring for why it is safe)."""
    marker = FileLock(f"{path}.break-{generation}", f"removing {os.path.basename(path)}", lease=MARKER_LEASE)
    if not marker.take(renew=False):
        found = read_holder(marker.path)
        if depth >= MAX_DEPTH or lock_alive(marker.path, found) is not False:
            return False  # another process is removing this generation: leave it to it
        stale = _generation(marker.path, found)
        if stale is not None:
            remove_generation(marker.path, stale, depth + 1)
        if not marker.take(renew=False):
            return False
    try:
        if _generation(path) != generation:
            return False
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    finally:
        # Garbage now: `path` no longer is `generation` and never will be again (tokens are
        # unique), so a process that takes this marker later removes nothing.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(marker.path)


def describe(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an unknown process (the lock file is empty or unreadable)"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("since", 0)))
    return f"{holder.get('what', '?')} (pid {holder.get('pid')} on {holder.get('host')}, since {since})"


class _Renewer:
    """Touches a held lock every lease/4 seconds from a thread, so that other hosts see its
    holder alive while the main thread is busy (in a model's generate, say). It stops on
    release, or when the lock is found to be someone else's (it was judged stale and broken)."""

    def __init__(self, path: str, token: str, lease: float) -> None:
        self.path, self.token, self.interval = path, token, lease / 4
        self.stop = threading.Event()
        self.lost = False
        self.thread = threading.Thread(target=self._run, name=f"lease {os.path.basename(path)}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            if (read_holder(self.path) or {}).get("token") != self.token:
                self.lost = True
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)  # no times given: the file server stamps its own clock

    def close(self) -> None:
        self.stop.set()


class FileLock:
    """`with FileLock(path, "building env tf437").hold(timeout=600): ...`"""

    def __init__(self, path: str | os.PathLike[str], what: str, lease: float | None = None) -> None:
        self.path = os.fspath(path)
        self.what = what
        self.lease = default_lease() if lease is None else lease
        self.token: str | None = None
        self._renewer: _Renewer | None = None

    def take(self, renew: bool = True) -> bool:
        """Create the lock if nobody holds it (no waiting, no stale-lock recovery)."""
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        info = me(self.what, self.lease)
        tmp = os.path.join(folder, f".{os.path.basename(self.path)}.new-{info['token']}")
        with open(tmp, "w") as fh:
            json.dump(info, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        try:
            os.link(tmp, self.path)
            made = True
        except FileExistsError:
            # NFS may answer a retransmitted LINK with EEXIST although the first one worked:
            # then our file has two names.
            made = os.stat(tmp).st_nlink == 2
        finally:
            os.unlink(tmp)
        if made:
            self.token = info["token"]
            if renew:
                self._renewer = _Renewer(self.path, self.token, self.lease)
        return made

    def try_acquire(self) -> bool:
        return self.take()

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
        while not self.take():
            free, holder = self._clear_stale()
            if free:
                continue
            if time.monotonic() >= deadline:
                raise LockBusy(self.busy_message(holder, advice), holder)
            if on_wait is not None and not told:
                on_wait(holder)
                told = True
            time.sleep(poll)

    def _clear_stale(self) -> tuple[bool, dict[str, Any] | None]:
        """Remove the lock if its holder is dead; (may it be free now?, the holder found)."""
        holder = read_holder(self.path)
        if holder is None and not os.path.lexists(self.path):
            return True, None  # released meanwhile
        if lock_alive(self.path, holder) is not False:
            return False, holder
        generation = _generation(self.path, holder)
        if generation is None:
            return True, None
        removed = remove_generation(self.path, generation)
        # Not removed by us: by another process that found it stale too (then it is gone), or
        # that process is removing it right now (then wait a poll).
        return removed or _generation(self.path) != generation, holder

    def busy_message(self, holder: dict[str, Any] | None, advice: str = "") -> str:
        alive = lock_alive(self.path, holder) if holder else None
        if alive and holder_alive(holder):
            clear = advice or f"wait for it to finish, or stop it (kill {holder['pid']})"
        elif alive:
            clear = advice or (f"wait for it to finish (its host renews the lock; it is free "
                               f"{holder.get('lease'):.0f} s after that stops)")  # fmt: skip
        else:
            clear = f"if that process is gone (its node died, say), remove {self.path}"
        return f"{self.what}: locked by {describe(holder)}; {clear}"

    @property
    def lost(self) -> bool:
        """The lock was judged stale and taken from us (our lease ran out while we were alive)."""
        return self._renewer is not None and self._renewer.lost

    def release(self) -> None:
        if self.token is None:
            return
        if self._renewer is not None:
            self._renewer.close()
            self._renewer = None
        remove_generation(self.path, self.token)
        self.token = None

    @contextlib.contextmanager
    def hold(self, timeout: float, **kw: Any) -> Iterator[FileLock]:
        self.acquire(timeout, **kw)
        try:
            yield self
        finally:
            self.release()
