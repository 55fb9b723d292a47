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

    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    orig_tensor_to, orig_module_to = torch.Tensor.to, torch.nn.Module.to

    def _f32(a: Any) -> Any:  # CPU convolutions have no float16 kernels in these torch builds
        return torch.float32 if a is torch.float16 else a

    def tensor_to(self: Any, *args: Any, **kwargs: Any) -> Any:
        args = tuple(_cpu(a) if isinstance(a, (str, torch.device)) else _f32(a) for a in args)
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        if "dtype" in kwargs:
            kwargs["dtype"] = _f32(kwargs["dtype"])
        return orig_tensor_to(self, *args, **kwargs)

    def module_to(self: Any, *args: Any, **kwargs: Any) -> Any:
        args = tuple(_cpu(a) if isinstance(a, (str, torch.device)) else _f32(a) for a in args)
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        if "dtype" in kwargs:
            kwargs["dtype"] = _f32(kwargs["dtype"])
        return orig_module_to(self, *args, **kwargs)

    torch.Tensor.to = tensor_to  # type: ignore[method-assign]
    torch.nn.Module.to = module_to  # type: ignore[method-assign]
    # CPU kernels for float16 are incomplete in older torch: compute in float32 instead.
    torch.Tensor.half = lambda self, *a, **k: self.float() if self.is_floating_point() else self  # type: ignore[method-assign]
    torch.nn.Module.half = lambda self, *a, **k: self.float()  # type: ignore[method-assign]
    torch.cuda.empty_cache = lambda: None
    torch.cuda.synchronize = lambda *a, **k: None

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
        elif (dm is not None and str(dm) != "auto") or dm == "auto":
            kwargs["device_map"] = "cpu"
        return original(cls, *args, **kwargs)

    base.from_pretrained = classmethod(from_pretrained)
    try:  # VLMEvalKit asks nvidia-smi how much memory the GPUs have, and asserts it is > 0
        import vlmeval.smp as smp
        import vlmeval.smp.misc as misc

        fake = lambda: [81920]  # noqa: E731
        for mod in (smp, misc):
            if hasattr(mod, "get_gpu_memory"):
                mod.get_gpu_memory = fake
        import sys

        for name, mod in list(sys.modules.items()):
            if name.startswith("vlmeval.vlm") and getattr(mod, "get_gpu_memory", None) is not None:
                mod.get_gpu_memory = fake
    except ImportError:
        pass
