"""GPU inventory: what `nvidia-smi` reports, narrowed to what this process may use.

nvidia-smi always lists every GPU of the node in PCI order and ignores CUDA_VISIBLE_DEVICES, while
CUDA numbers devices inside that variable. We therefore resolve the inherited variable (indices,
UUIDs or MIG ids) against nvidia-smi's list, and hand children UUIDs: a UUID means the same
device whatever the child's device ordering.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping
from dataclasses import dataclass

from . import procs
from .errors import SpectravenvError

QUERY = "index,uuid,name,memory.total,memory.free,driver_version"


@dataclass(frozen=True)
class GPU:
    index: int  # nvidia-smi's (PCI order) index on this node
    uuid: str
    name: str
    memory_total_mb: int
    memory_free_mb: int
    driver: str = ""
    busy_pids: tuple[int, ...] = ()

    @property
    def free_gb(self) -> float:
        return self.memory_free_mb / 1024

    @property
    def total_gb(self) -> float:
        return self.memory_total_mb / 1024


def _int(value: str) -> int:
    try:
        return int(float(value))
    except ValueError:  # "[N/A]" on some MIG and vGPU setups
        return 0


def parse_query(text: str) -> list[GPU]:
    gpus = []
    for row in csv.reader(line for line in text.splitlines() if line.strip()):
        cells = [c.strip() for c in row]
        if len(cells) < 5:
            raise SpectravenvError(f"cannot parse nvidia-smi output line: {','.join(cells)[:80]!r}")
        index, uuid, name, total, free = cells[:5]
        driver = cells[5] if len(cells) > 5 else ""
        gpus.append(GPU(int(index), uuid, name, _int(total), _int(free), driver))
    return gpus


def parse_apps(text: str) -> dict[str, list[int]]:
    """`--query-compute-apps=gpu_uuid,pid` -> {uuid: [pid, ...]}."""
    out: dict[str, list[int]] = {}
    for row in csv.reader(line for line in text.splitlines() if line.strip()):
        if len(row) >= 2 and row[1].strip().isdigit():
            out.setdefault(row[0].strip(), []).append(int(row[1]))
    return out


def query(smi: str = "nvidia-smi") -> list[GPU]:
    """Every GPU on this node with its free memory; [] when there is no NVIDIA driver."""
    try:
        proc = procs.run([smi, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"], timeout=30)
    except SpectravenvError:
        return []  # not installed: a machine without GPUs
    if proc.returncode != 0:
        # Installed but no driver or no device ("NVIDIA-SMI has failed ..."): no usable GPU.
        return []
    gpus = parse_query(proc.stdout)
    apps = procs.run(
        [smi, "--query-compute-apps=gpu_uuid,pid", "--format=csv,noheader"], timeout=30
    )
    busy = parse_apps(apps.stdout) if apps.returncode == 0 else {}
    return [
        GPU(g.index, g.uuid, g.name, g.memory_total_mb, g.memory_free_mb, g.driver,
            tuple(busy.get(g.uuid, ())))
        for g in gpus
    ]  # fmt: skip


def _match(token: str, gpus: list[GPU]) -> GPU | None:
    token = token.strip()
    if token.isdigit():
        return next((g for g in gpus if g.index == int(token)), None)
    # UUIDs may be abbreviated to a unique prefix, as CUDA allows ("GPU-8f2a").
    hits = [g for g in gpus if g.uuid == token or g.uuid.startswith(token)]
    return hits[0] if len(hits) == 1 else None


def visible(gpus: list[GPU], environ: Mapping[str, str] | None = None) -> list[GPU]:
    """The GPUs this process may use, in CUDA's order, honouring an inherited CUDA_VISIBLE_DEVICES.

    Like CUDA, parsing stops at the first entry that names no device.
    """
    env = os.environ if environ is None else environ
    raw = env.get("CUDA_VISIBLE_DEVICES")
    if raw is None:
        return list(gpus)
    out: list[GPU] = []
    for token in raw.split(","):
        if not token.strip():
            break
        g = _match(token, gpus)
        if g is None or g in out:
            break
        out.append(g)
    return out


def select(allowed: list[GPU], spec: str) -> list[GPU]:
    """`--gpus 0,2`: positions in the visible list (CUDA's numbering in this process), or UUIDs."""
    chosen: list[GPU] = []
    for token in (t.strip() for t in spec.split(",")):
        if not token:
            continue
        if token.isdigit():
            pos = int(token)
            if pos >= len(allowed):
                have = ", ".join(str(i) for i in range(len(allowed))) or "none"
                raise SpectravenvError(
                    f"--gpus {spec}: GPU {pos} does not exist here (visible GPUs: {have}); "
                    "see `nvidia-smi` and CUDA_VISIBLE_DEVICES"
                )
            g = allowed[pos]
        else:
            g = _match(token, allowed)
            if g is None:
                raise SpectravenvError(f"--gpus {spec}: no visible GPU has UUID {token!r}")
        if g not in chosen:
            chosen.append(g)
    if not chosen:
        raise SpectravenvError(f"--gpus {spec!r} names no GPU; give indices like 0,2")
    return chosen


def assumed(spec: str) -> list[GPU]:
    """`--assume-gpus 8x80`: N hypothetical GPUs of M GB each, to plan for a machine not at hand."""
    count, _, mem = spec.lower().partition("x")
    try:
        n, gb = int(count), float(mem or 80)
    except ValueError:
        raise SpectravenvError(f"--assume-gpus {spec!r}: write COUNTxGB, e.g. 8x80") from None
    if n <= 0 or gb <= 0:
        raise SpectravenvError(f"--assume-gpus {spec!r}: count and memory must be positive")
    mb = int(gb * 1024)
    return [GPU(i, f"GPU-assumed-{i}", f"assumed {gb:g} GB GPU", mb, mb) for i in range(n)]
