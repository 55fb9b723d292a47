"""Canned `nvidia-smi` outputs, in the exact shape the real tool prints them."""

from __future__ import annotations


def h100s(n: int, free_mb: list[int] | None = None) -> str:
    free_mb = free_mb or [81000] * n
    return "".join(
        f"{i}, GPU-{i:08x}-aaaa-bbbb-cccc-{i:012x}, NVIDIA H100 80GB HBM3, 81559, {free_mb[i]}, 550.54.15\n"
        for i in range(n)
    )


ONE_A100 = (
    "0, GPU-5f1c3a2e-0000-1111-2222-333344445555, NVIDIA A100-SXM4-40GB, 40960, 40338, 535.104.05\n"
)
# A device whose memory nvidia-smi cannot read (some vGPU and MIG setups print [N/A]).
MIG_NA = "0, MIG-0a1b2c3d-4e5f-6789-abcd-ef0123456789, NVIDIA A100-SXM4-80GB MIG 1g.10gb, [N/A], [N/A], 535.104.05\n"
# Free memory unknown, total known.
FREE_NA = "0, GPU-6e2d4b3f-1111-2222-3333-444455556666, NVIDIA A10G, 23028, [N/A], 535.104.05\n"

# Two A100 80GB; GPU 0 is split with MIG into three 1g.10gb devices and one 3g.40gb, GPU 1 is
# whole. `--query-gpu` lists both GPUs (a MIG-split GPU with its whole memory); `-L` of a driver
# >= R470 names the MIG devices "MIG-<uuid>" (format as printed by nvidia-smi 535).
A100_MIG_QUERY = (
    "0, GPU-7fdaf0a5-179b-f636-d15d-daf243e3ff16, NVIDIA A100-SXM4-80GB, 81920, 81050, 535.216.01\n"
    "1, GPU-d8594bd4-0fc3-8595-e355-7c98138f3b95, NVIDIA A100-SXM4-80GB, 81920, 81050, 535.216.01\n"
)
A100_MIG_LIST = """\
GPU 0: NVIDIA A100-SXM4-80GB (UUID: GPU-7fdaf0a5-179b-f636-d15d-daf243e3ff16)
  MIG 3g.40gb     Device  0: (UUID: MIG-0929581a-2be6-5dec-bf34-0954c6c529a6)
  MIG 1g.10gb     Device  1: (UUID: MIG-feb88891-0321-5fef-9c87-d4af3b54259e)
  MIG 1g.10gb     Device  2: (UUID: MIG-a25704ba-3a06-5299-a795-fd7cf4d13973)
  MIG 1g.10gb     Device  3: (UUID: MIG-50f1c4c9-1508-5e8d-bb06-d08145b22e01)
GPU 1: NVIDIA A100-SXM4-80GB (UUID: GPU-d8594bd4-0fc3-8595-e355-7c98138f3b95)
"""
# The same machine under an R450/R460 driver: MIG devices named MIG-GPU-<gpu uuid>/<gi>/<ci>.
A100_MIG_LIST_OLD = """\
GPU 0: A100-SXM4-80GB (UUID: GPU-7fdaf0a5-179b-f636-d15d-daf243e3ff16)
  MIG 3g.40gb Device 0: (UUID: MIG-GPU-7fdaf0a5-179b-f636-d15d-daf243e3ff16/2/0)
  MIG 1g.10gb Device 1: (UUID: MIG-GPU-7fdaf0a5-179b-f636-d15d-daf243e3ff16/7/0)
  MIG 1g.10gb Device 2: (UUID: MIG-GPU-7fdaf0a5-179b-f636-d15d-daf243e3ff16/8/0)
  MIG 1g.10gb Device 3: (UUID: MIG-GPU-7fdaf0a5-179b-f636-d15d-daf243e3ff16/9/0)
GPU 1: A100-SXM4-80GB (UUID: GPU-d8594bd4-0fc3-8595-e355-7c98138f3b95)
"""
