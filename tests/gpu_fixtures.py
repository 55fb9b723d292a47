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
MIG_NA = "0, MIG-0a1b2c3d-4e5f-6789-abcd-ef0123456789, NVIDIA A100-SXM4-80GB MIG 1g.10gb, [N/A], [N/A], 535.104.05\n"
