"""Run wrappers written for CUDA on a CPU-only machine (selftest only, never in an evaluation).

Most VLMEvalKit wrappers hard-code the GPU: `.cuda()`, `device_map="cuda"`, `.to("cuda")`,
`assert max_gpu_mem > 0`. Without a GPU the selftest redirects exactly those calls to the CPU,
so the family's real code still runs end to end; rows say they ran this way.
"""

from __future__ import annotations

from typing import Any


def _cpu(device: Any) -> Any:
    text = str(device) if device is not None else ""
    return "cpu" if text.startswith("cuda") or (isinstance(device, int) and not isinstance(device, bool)) else device


def redirect_cuda_to_cpu() -> None:
    import torch

    _patch_devices(torch)
    _patch_half(torch)
    _patch_from_pretrained(torch)
    _patch_gpu_memory()


def _f32(torch: Any, a: Any) -> Any:
    """CPU convolutions have no float16 kernels in these torch builds: float32 instead."""
    return torch.float32 if a is torch.float16 else a


def _to_cpu(torch: Any, original: Any) -> Any:
    """`.to(...)` with every CUDA device made the CPU and float16 made float32."""

    def to(self: Any, *args: Any, **kwargs: Any) -> Any:
        args = tuple(_cpu(a) if isinstance(a, (str, torch.device)) else _f32(torch, a) for a in args)
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        if "dtype" in kwargs:
            kwargs["dtype"] = _f32(torch, kwargs["dtype"])
        return original(self, *args, **kwargs)

    return to


def _patch_devices(torch: Any) -> None:
    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.Tensor.to = _to_cpu(torch, torch.Tensor.to)  # type: ignore[method-assign]
    torch.nn.Module.to = _to_cpu(torch, torch.nn.Module.to)  # type: ignore[method-assign]
    torch.cuda.empty_cache = lambda: None
    torch.cuda.synchronize = lambda *a, **k: None


def _patch_half(torch: Any) -> None:
    # CPU kernels for float16 are incomplete in older torch: compute in float32 instead.
    torch.Tensor.half = lambda self, *a, **k: self.float() if self.is_floating_point() else self  # type: ignore[method-assign]
    torch.nn.Module.half = lambda self, *a, **k: self.float()  # type: ignore[method-assign]


def _patch_from_pretrained(torch: Any) -> None:
    from transformers import modeling_utils

    base = modeling_utils.PreTrainedModel
    original = base.from_pretrained.__func__

    def from_pretrained(cls: Any, *args: Any, **kwargs: Any) -> Any:
        for key in ("torch_dtype", "dtype"):
            if kwargs.get(key) in (torch.float16, "float16"):
                kwargs[key] = torch.float32
        dm = kwargs.get("device_map")
        if isinstance(dm, dict):
            kwargs["device_map"] = {k: _cpu(v) for k, v in dm.items()}
        elif dm is not None:  # "auto", "cuda", "cuda:0", an index: all of it on the CPU
            kwargs["device_map"] = "cpu"
        return original(cls, *args, **kwargs)

    base.from_pretrained = classmethod(from_pretrained)


def _patch_gpu_memory() -> None:
    """VLMEvalKit asks nvidia-smi how much memory the GPUs have, and asserts it is > 0."""
    import sys

    try:
        import vlmeval.smp as smp
        import vlmeval.smp.misc as misc
    except ImportError:
        return
    fake = lambda: [81920]  # noqa: E731
    modules = [smp, misc] + [m for n, m in list(sys.modules.items()) if n.startswith("vlmeval.vlm")]
    for mod in modules:
        if getattr(mod, "get_gpu_memory", None) is not None:
            mod.get_gpu_memory = fake
