"""GPU inventory: what `nvidia-smi` reports, narrowed to what this process may use.

nvidia-smi always lists every GPU of the node in PCI order and ignores CUDA_VISIBLE_DEVICES, while
CUDA numbers devices inside that variable. We therefore resolve the inherited variable (indices,
GPU UUIDs, MIG UUIDs in either form) against nvidia-smi's list. `--query-gpu` gives whole GPUs
with their memory; `-L` adds the MIG devices of GPUs split with MIG (a MIG device's memory is
its profile's, e.g. `1g.10gb`; its free memory is unknown). A MIG-split GPU itself runs nothing:
its MIG devices take its place in the pool.

Children are handed whole GPUs by nvidia-smi index (with CUDA_DEVICE_ORDER=PCI_BUS_ID, so the
index names the same device for CUDA as for nvidia-smi) and MIG devices by UUID. Why indices and
not UUIDs for whole GPUs: VLMEvalKit parses the variable as integers (`vlmeval/smp/misc.py
get_cuda_visible_devices`, `vlmeval/run.py get_gpu_list`, `HFChatModel` when it holds several),
and so may a model's wrapper; a UUID there is a ValueError inside the job. A MIG device has no
integer name (CUDA accepts only its UUID), so it goes by UUID; a worker gets one MIG device.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from spectravenv import procs
from spectravenv.errors import SpectravenvError

QUERY = "index,uuid,name,memory.total,memory.free,driver_version"
# `nvidia-smi -L`: "GPU 0: NAME (UUID: GPU-...)", and under a MIG-split GPU one line per MIG
# device: "  MIG 1g.10gb     Device  0: (UUID: MIG-...)" (drivers >= R470), or
# "  MIG 3g.20gb Device 0: (UUID: MIG-GPU-<gpu uuid>/<gi>/<ci>)" (R450/R460).
_LIST_GPU = re.compile(r"^GPU (\d+): .*\(UUID: (GPU-[^)\s]+)\)")
_LIST_MIG = re.compile(r"^\s+MIG (\S+)\s+Device\s+(\d+): \(UUID: (MIG-[^)\s]+)\)")
_PROFILE_GB = re.compile(r"^\d+g\.(\d+)gb")


@dataclass(frozen=True)
class GPU:
    """A device a worker can be given: a whole GPU, or one MIG device of a MIG-split GPU."""

    index: int  # nvidia-smi's (PCI order) index on this node; a MIG device's: its GPU's
    uuid: str  # GPU-... or MIG-...
    name: str
    memory_total_mb: int  # 0: unknown
    memory_free_mb: int | None  # None: unknown ("[N/A]", and every MIG device)
    driver: str = ""
    mig: int | None = None  # the MIG device's number on its GPU (nvidia-smi -L); None: a whole GPU

    @property
    def free_known(self) -> bool:
        return self.memory_free_mb is not None

    @property
    def free_gb(self) -> float:
        """Free memory; where nvidia-smi cannot say, the total: a device is only ever handed to
        one worker of ours at a time, so total minus what we handed out is all of it."""
        mb = self.memory_free_mb if self.memory_free_mb is not None else self.memory_total_mb
        return mb / 1024

    @property
    def total_gb(self) -> float:
        return self.memory_total_mb / 1024

    @property
    def label(self) -> str:
        """How the console names it: "3", or "3/mig1" for MIG device 1 of GPU 3."""
        return str(self.index) if self.mig is None else f"{self.index}/mig{self.mig}"

    @property
    def order(self) -> tuple[int, int]:
        return (self.index, -1 if self.mig is None else self.mig)

    @property
    def cuda_id(self) -> str:
        """Its name in a child's CUDA_VISIBLE_DEVICES (see the module docstring for why)."""
        return str(self.index) if self.mig is None else self.uuid


def _mb(value: str) -> int | None:
    try:
        return int(float(value))
    except ValueError:  # "[N/A]" on some MIG and vGPU setups
        return None


def parse_query(text: str) -> list[GPU]:
    gpus = []
    for row in csv.reader(line for line in text.splitlines() if line.strip()):
        cells = [c.strip() for c in row]
        if len(cells) < 5 or not cells[0].isdigit():
            raise SpectravenvError(f"cannot parse nvidia-smi output line: {','.join(cells)[:80]!r}")
        index, uuid, name, total, free = cells[:5]
        driver = cells[5] if len(cells) > 5 else ""
        gpus.append(GPU(int(index), uuid, name, _mb(total) or 0, _mb(free), driver))
    return gpus


def parse_list(text: str) -> dict[str, list[tuple[int, str, str]]]:
    """`nvidia-smi -L` -> {GPU uuid: [(MIG device number, profile, MIG uuid), ...]} for the GPUs
    that are split with MIG (a GPU without MIG devices is not a key)."""
    out: dict[str, list[tuple[int, str, str]]] = {}
    parent = None
    for line in text.splitlines():
        if m := _LIST_GPU.match(line):
            parent = m.group(2)
        elif (m := _LIST_MIG.match(line)) and parent is not None:
            out.setdefault(parent, []).append((int(m.group(2)), m.group(1), m.group(3)))
    return out


def with_mig(gpus: list[GPU], migs: dict[str, list[tuple[int, str, str]]]) -> list[GPU]:
    """Whole GPUs, a MIG-split GPU replaced by its MIG devices (in nvidia-smi's order)."""
    out = []
    for g in gpus:
        if g.uuid not in migs:
            out.append(g)
            continue
        for number, profile, uuid in migs[g.uuid]:
            gb = _PROFILE_GB.match(profile)
            total = int(gb.group(1)) * 1024 if gb else 0
            out.append(GPU(g.index, uuid, f"{g.name} MIG {profile}", total, None, g.driver, number))
    return out


def _smi(smi: str, *args: str) -> str:
    """One nvidia-smi call's output; SpectravenvError if it cannot answer."""
    proc = procs.run([smi, *args], timeout=30)
    if proc.returncode != 0:
        line = (proc.stderr or proc.stdout).strip().splitlines()[:1] or [f"exit code {proc.returncode}"]
        raise SpectravenvError(f"nvidia-smi failed: {line[0][:160]}")
    return proc.stdout


def readings(smi: str = "nvidia-smi") -> list[GPU]:
    """Whole GPUs with their free memory now (one call): what the dispatcher re-reads while it
    works. Raises SpectravenvError when nvidia-smi does not answer or answers what we cannot read."""
    return parse_query(_smi(smi, f"--query-gpu={QUERY}", "--format=csv,noheader,nounits"))


def query(smi: str = "nvidia-smi") -> list[GPU]:
    """Every device on this node (whole GPUs, and MIG devices in place of MIG-split GPUs) with
    its free memory; [] when there is no NVIDIA driver."""
    try:
        gpus = readings(smi)
    except SpectravenvError:
        # Not installed, or installed without a driver or device ("NVIDIA-SMI has failed ..."):
        # no usable GPU.
        return []
    try:
        migs = parse_list(_smi(smi, "-L"))
    except SpectravenvError:
        migs = {}  # -L is only asked for MIG devices; a GPU without them needs nothing from it
    return with_mig(gpus, migs)


def memory_notes(pool: list[GPU]) -> list[str]:
    """What the plan assumes about devices whose free memory nvidia-smi cannot tell."""
    unknown = [g for g in pool if not g.free_known]
    if not unknown:
        return []
    names = ", ".join(f"{g.label} ({g.total_gb:.0f} GB)" if g.memory_total_mb else g.label for g in unknown)
    note = (f"nvidia-smi reports no free memory for GPU {names}: planning with their total memory "
            "(less what spectravenv itself hands out)")  # fmt: skip
    if any(not g.memory_total_mb for g in unknown):
        note += "; a device whose total is unknown too takes no model that needs GPU memory"
    return [note]


def _match(token: str, gpus: list[GPU]) -> GPU | None:
    token = token.strip()
    if token.isdigit():  # an index names a whole GPU (a MIG device has only its UUID)
        return next((g for g in gpus if g.index == int(token) and g.mig is None), None)
    # UUIDs may be abbreviated to a unique prefix, as CUDA allows ("GPU-8f2a", "MIG-4f1c"); a
    # MIG UUID in the old form (MIG-GPU-<uuid>/<gi>/<ci>) matches as the driver's -L prints it.
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
