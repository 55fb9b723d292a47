"""The VLMEvalKit side (ms-vlmeval 0.0.20): the functions the runner calls, imported in the env.

The runner drives VLMEvalKit through its Python functions rather than `run.py`: the model is
built once, then per benchmark `build_dataset`, `infer_data_job` and `dataset.evaluate` run
exactly as run.py calls them (same judge kwargs), so predictions and score files are VLMEvalKit's.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

from . import demo

# The marker VLMEvalKit uses for failed answers (vlmeval.inference.FAIL_MSG); predictions
# containing it are retried on the next run, by VLMEvalKit and here.
DEFAULT_FAIL_MSG = "Failed to obtain answer via API."
# Datasets without public answers: run.py does inference only (it "skips" evaluation).
NO_EVAL_EXACT = {
    "MMMU_TEST", "DocVQA_TEST", "InfoVQA_TEST", "Q-Bench1_TEST", "A-Bench_TEST", "AesBench_TEST",
    "MMBench_TEST_CN", "MMBench_TEST_EN", "MMBench", "MMBench_CN", "MMBench_TEST_CN_V11",
    "MMBench_TEST_EN_V11", "MMBench_V11", "MMBench_CN_V11",
}  # fmt: skip
NO_EVAL_SUBSTR = ("MMT-Bench_ALL", "MLLMGuard_DS")
# The judge keyword arguments run.py passes with its default flags (--api-nproc 4, --retry 6,
# --judge-timeout 600): an API judge then behaves as under run.py.
JUDGE_DEFAULTS = {"nproc": 4, "verbose": False, "retry": 6, "timeout": 600}
# Stems (file name without extension, after "{model}_{dataset}") of files holding scores.
SCORE_STEM = re.compile(r"_(acc|acc_all|score|scores|rating|final_rating|metrics|detailed_metrics)$")
SCORE_EXT = (".csv", ".json", ".xlsx", ".tsv")


def log(msg: str) -> None:
    """Human-readable progress on stderr (the dispatcher keeps it, masked, as the job log)."""
    sys.stderr.write(f"[spectravenv-runner r{os.environ.get('RANK', '0')}] {msg}\n")
    sys.stderr.flush()


def no_eval(dataset_name: str) -> bool:
    return dataset_name in NO_EVAL_EXACT or any(s in dataset_name for s in NO_EVAL_SUBSTR)


class Kit:
    """The VLMEvalKit functions the runner uses."""

    def __init__(self) -> None:
        import vlmeval  # noqa: F401
        import vlmeval.inference as inference
        from vlmeval.dataset import DATASET_CLASSES, build_dataset
        from vlmeval.inference import infer_data, infer_data_job
        from vlmeval.inference_video import infer_data as infer_data_video
        from vlmeval.inference_video import infer_data_job_video
        from vlmeval.smp import dump, get_pred_file_path, load

        self.build_dataset = build_dataset
        self.infer_data = infer_data
        self.infer_data_job = infer_data_job
        # Video datasets (MODALITY VIDEO) go through VLMEvalKit's own video path, as run.py does:
        # the dataset samples the frames in build_prompt, the model gets them as images.
        self.infer_data_video = infer_data_video
        self.infer_data_job_video = infer_data_job_video
        self.infer_params = set(inspect.signature(infer_data_job).parameters)
        self.load, self.dump = load, dump
        self.fail_msg = getattr(inference, "FAIL_MSG", DEFAULT_FAIL_MSG)
        self.dataset_classes = DATASET_CLASSES
        try:
            from vlmeval.dataset.video_dataset_config import supported_video_datasets

            self.video_names = set(supported_video_datasets)
        except Exception:
            self.video_names = set()
        self.pred_path = lambda wd, m, d: get_pred_file_path(wd, m, d, use_env_format=True)
        self.patched_decoders = patch_image_decoding()

    def is_official(self, name: str) -> bool:
        if name in self.video_names:
            return True
        return any(name in cls.supported_datasets() for cls in self.dataset_classes)

    def is_failed(self, value: Any) -> bool:
        return self.fail_msg in str(value)


def patch_image_decoding() -> int:
    """Make VLMEvalKit's image cache writes atomic (in memory only; no env file is touched).

    `dataset.dump_image` decodes each base64 image to LMUData/images/<dataset>/ with a plain
    `PIL.Image.save` and reuses a file if `read_ok` can open its header, so two jobs on the same
    benchmark could read a half-written image. Writing to a temporary name with the same suffix
    (PIL picks the format from it) and renaming closes that race. Returns how many module
    attributes were replaced.
    """
    import vlmeval.smp.vlm as smp_vlm

    orig = smp_vlm.decode_base64_to_image_file
    if getattr(orig, "_spectravenv_atomic", False):
        return 0

    def atomic_decode(base64_string: str, image_path: str, target_size: int = -1) -> None:
        folder = os.path.dirname(image_path) or "."
        os.makedirs(folder, exist_ok=True)
        stem, ext = os.path.splitext(os.path.basename(image_path))
        fd, tmp = tempfile.mkstemp(prefix=f".tmp-{stem}-", suffix=ext, dir=folder)
        os.close(fd)
        try:
            orig(base64_string, tmp, target_size=target_size)
            os.chmod(tmp, 0o644)
            os.replace(tmp, image_path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    atomic_decode._spectravenv_atomic = True  # type: ignore[attr-defined]
    count = 0
    for name, mod in list(sys.modules.items()):
        if name.startswith("vlmeval") and getattr(mod, "decode_base64_to_image_file", None) is orig:
            mod.decode_base64_to_image_file = atomic_decode
            count += 1
    return count


def sdpa_for_flash_attention() -> list[str]:
    """Load with PyTorch's attention where a wrapper asks for FlashAttention 2 and flash-attn is
    not installed (it is on no index these locks can hash: PyPI has only its source, which
    needs a CUDA toolchain and an hour to build). Many VLMEvalKit wrappers hard-code
    attn_implementation="flash_attention_2" (Qwen2/2.5/3-VL, Gemma 3, Idefics, Phi-3.5, ...),
    which would otherwise fail at load. The request is withdrawn, so transformers uses SDPA (or
    eager where the class has no SDPA), the same attention; numbers can differ in the last digits. Returns the list that records, per loaded class, that the swap happened
    (the runner reports it in `model_loaded`, and the report shows it)."""
    swapped: list[str] = []
    try:
        import flash_attn  # noqa: F401

        return swapped  # the real thing is there: change nothing
    except Exception:
        pass
    from transformers import modeling_utils

    base = modeling_utils.PreTrainedModel
    original = base.from_pretrained.__func__
    if getattr(original, "_spectravenv_sdpa", False):
        return swapped

    def from_pretrained(cls: Any, *args: Any, **kwargs: Any) -> Any:
        # The request is withdrawn, not replaced by "sdpa": transformers then picks SDPA where
        # the class supports it and eager where it does not (Idefics2 in 4.40 has no SDPA;
        # Idefics3's vision tower in 4.48 rejects it once it is copied into the sub-configs).
        asked = False
        for key in ("attn_implementation", "_attn_implementation"):
            if kwargs.get(key) == "flash_attention_2":
                del kwargs[key]
                asked = True
        if kwargs.pop("use_flash_attention_2", False):
            asked = True
        # The Auto classes (AutoModelForImageTextToText, ...) hand attn_implementation to
        # AutoConfig first, so it arrives here inside the config (and its sub-configs).
        config = kwargs.get("config")
        if getattr(config, "_attn_implementation_internal", None) == "flash_attention_2":
            config = kwargs["config"] = copy.deepcopy(config)
            subs = [getattr(config, k, None) for k in (getattr(config, "sub_configs", None) or {})]
            for sub in [config, *subs]:
                if getattr(sub, "_attn_implementation_internal", None) == "flash_attention_2":
                    sub._attn_implementation_internal = None
            asked = True
        model = original(cls, *args, **kwargs)
        if asked:
            used = getattr(getattr(model, "config", None), "_attn_implementation", None) or "default"
            swapped.append(f"{cls.__name__} ({used})")
        return model

    from_pretrained._spectravenv_sdpa = True  # type: ignore[attr-defined]
    base.from_pretrained = classmethod(from_pretrained)
    return swapped


def plain_parse_response() -> list[str]:
    """Make `processor.parse_response(text)` give the answer text, as VLMEvalKit's Gemma 4 wrapper
    expects. The wrapper calls it with the decoded text alone and reads 'answer' or 'response'
    from a dict; transformers 5.20 raises without a `response_template` on the tokenizer, wants
    `prefix=`, and returns {"role", "content", "thinking"}, so every Gemma 4 answer would be an
    error or a dict's repr. Here: no template -> the text unchanged (what the wrapper's hasattr
    check means to do without one), a template -> parsed with an empty prefix and its content.
    Returns the list that records, per processor class, that it was used."""
    used: list[str] = []
    try:
        from transformers import processing_utils
    except Exception:
        return used
    mixin = processing_utils.ProcessorMixin
    original = getattr(mixin, "parse_response", None)
    if original is None or getattr(original, "_spectravenv_plain", False):
        return used
    if "prefix" not in inspect.signature(original).parameters:
        return used  # a release whose parse_response takes the text alone: leave it

    def parse_response(self: Any, response: Any, *args: Any, **kwargs: Any) -> Any:
        if args or kwargs:
            return original(self, response, *args, **kwargs)  # a caller that knows the new API
        used.append(type(self).__name__)
        tokenizer = getattr(self, "tokenizer", None)
        if not isinstance(response, str) or getattr(tokenizer, "response_template", None) is None:
            return response
        parsed = original(self, response, prefix="")
        return parsed.get("content", response) if isinstance(parsed, dict) else parsed

    parse_response._spectravenv_plain = True  # type: ignore[attr-defined]
    mixin.parse_response = parse_response
    return used


def compat_notes(swapped: list[str], parsed: list[str]) -> str:
    """One line for `model_loaded` and the report: which compatibility fixes were used."""
    notes = []
    if swapped:
        notes.append("PyTorch attention instead of flash_attention_2 (flash-attn is not installed) for "
                     + ", ".join(sorted(set(swapped))))  # fmt: skip
    if parsed:
        notes.append("parse_response of the plain answer text for " + ", ".join(sorted(set(parsed))))
    return "; ".join(notes)


def unavailable_reason(factory: Any) -> str | None:
    """The import error behind a guard placeholder class (see runners/vlmeval_guard.py)."""
    target = getattr(factory, "func", factory)
    return getattr(target, "_spectravenv_unavailable", None)


def model_factory(spec: dict[str, Any], assets_dir: str) -> tuple[Callable[[], Any], str, dict]:
    """A functools.partial like the entries of vlmeval.config.supported_VLM, its description,
    and the keyword arguments it will be called with (for the checkpoint's identity)."""
    kwargs = dict(spec.get("kwargs") or {})
    if spec.get("vlmeval_name"):
        from vlmeval.config import supported_VLM

        name = spec["vlmeval_name"]
        if name not in supported_VLM:
            raise KeyError(f"{name!r} is not in vlmeval.config.supported_VLM of this VLMEvalKit")
        base = supported_VLM[name]
        factory = functools.partial(base, **kwargs) if kwargs else base
        merged = {**(getattr(base, "keywords", None) or {}), **kwargs}
        return factory, f"supported_VLM[{name!r}]", merged
    if spec.get("class"):
        import vlmeval.api
        import vlmeval.vlm

        cls_name = spec["class"]
        cls = getattr(vlmeval.vlm, cls_name, None) or getattr(vlmeval.api, cls_name, None)
        if cls is None:
            raise KeyError(f"class {cls_name!r} is in neither vlmeval.vlm nor vlmeval.api")
        return functools.partial(cls, **kwargs), f"vlmeval class {cls_name}", kwargs
    cls = demo.builtin_model_class(spec["builtin"])
    kwargs.setdefault("assets_dir", assets_dir)
    return functools.partial(cls, **kwargs), f"builtin {spec['builtin']}", kwargs


def build_model(factory: Callable[[], Any], name: str) -> Any:
    reason = unavailable_reason(factory)
    if reason is not None:
        # The wrapper's module could not be imported under this env's transformers: say so
        # plainly instead of a confusing error from the placeholder class.
        raise ImportError(f"{name}: its VLMEvalKit wrapper cannot be imported in this env: {reason}")
    # VLMEvalKit hides WORLD_SIZE while building (transformers >= 4.50 would otherwise switch
    # to tensor parallelism under torchrun); do the same.
    ws = os.environ.pop("WORLD_SIZE", None)
    try:
        return factory()
    finally:
        if ws is not None:
            os.environ["WORLD_SIZE"] = ws


CIRCULAR_TIMEOUT_VAR = "SPECTRAVENV_CIRCULAR_EVAL_TIMEOUT"
CIRCULAR_LOCK = "/tmp/.spectravenv-vlmeval-circular-eval.lock"


class circular_eval_guard:
    """Serialise VLMEvalKit's circular MCQ evaluation on this host and clean up after it.

    `mcq_circular_eval` (MMBench, CCBench, names with "circular"/"mmcr") round-trips its table
    through `/tmp/{timestr()}.xlsx`: a name with one-second resolution, fixed to /tmp, never
    deleted. Two evaluations in the same second would overwrite each other's file. Hold a
    host-wide lock (waiting at most SPECTRAVENV_CIRCULAR_EVAL_TIMEOUT seconds, default 7200, then
    a clear error), leave it only after the clock has moved to the next second, and delete the
    files this evaluation made: the names VLMEvalKit's `timestr()` gave it meanwhile (recorded
    while the guard is held), and of those only files of this user made since the guard began.
    Other users' and other programs' files in /tmp are never touched.
    """

    MARKERS = ("mmbench", "ccbench", "circular", "mmcr")
    EXTENSIONS = ("xlsx", "tsv", "json", "pkl", "csv")

    def __init__(self, dataset_name: str, timeout: float | None = None, lock_path: str = CIRCULAR_LOCK) -> None:
        self.active = any(m in dataset_name.lower() for m in self.MARKERS)
        self.timeout = _circular_timeout() if timeout is None else timeout
        self.lock_path = lock_path
        self.fd = -1
        self.started = 0.0
        self.names: list[str] = []  # what timestr() returned while the guard was held
        self.restore: list[tuple[Any, Any]] = []

    def __enter__(self) -> circular_eval_guard:
        if self.active:
            self._lock()
            self.started = time.time()
            self._record_timestr()
        return self

    def _lock(self) -> None:
        import fcntl

        # O_RDONLY: flock needs no write access, so another user's lock file works as well.
        self.fd = os.open(self.lock_path, os.O_RDONLY | os.O_CREAT, 0o666)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # host-local /tmp: a kernel lock
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    raise TimeoutError(
                        f"waited {self.timeout:.0f} s for another VLMEvalKit circular evaluation on this host "
                        f"(it holds {self.lock_path}; `fuser {self.lock_path}` names it): wait for it and "
                        f"resume, or allow a longer wait with {CIRCULAR_TIMEOUT_VAR}"
                    ) from None
                time.sleep(0.5)

    def _record_timestr(self) -> None:
        """Wrap `timestr` wherever VLMEvalKit's modules imported it, recording what it returns."""
        for module in [m for name, m in list(sys.modules.items()) if name.startswith("vlmeval")]:
            original = getattr(module, "timestr", None)
            if not callable(original) or getattr(original, "_spectravenv_recorded", False):
                continue

            def recorded(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
                name = _original(*args, **kwargs)
                self.names.append(str(name))
                return name

            recorded._spectravenv_recorded = True  # type: ignore[attr-defined]
            self.restore.append((module, original))
            module.timestr = recorded

    def _ours(self) -> list[str]:
        """The /tmp files this evaluation made: its timestr() names, this user, made since."""
        out = []
        for name in set(self.names):
            for ext in self.EXTENSIONS:
                path = os.path.join("/tmp", f"{name}.{ext}")
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if st.st_uid == os.getuid() and st.st_mtime >= self.started - 1:  # mtimes are coarse
                    out.append(path)
        return out

    def __exit__(self, *exc: Any) -> None:
        if not self.active:
            return
        import fcntl

        try:
            for module, original in self.restore:
                module.timestr = original
            for path in self._ours():
                with contextlib.suppress(OSError):
                    os.remove(path)
            time.sleep(1.05 - (time.time() % 1.0))  # next holder gets another timestr()
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)


def _circular_timeout() -> float:
    try:
        return float(os.environ.get(CIRCULAR_TIMEOUT_VAR, "") or 7200)
    except ValueError:
        return 7200.0


def snapshot(folder: str) -> dict[str, int]:
    out = {}
    for name in os.listdir(folder):
        p = os.path.join(folder, name)
        if os.path.isfile(p):
            out[p] = os.stat(p).st_mtime_ns
    return out


def versions() -> dict[str, str | None]:
    import platform
    from importlib import metadata

    def ver(*dists: str) -> str | None:
        for d in dists:
            try:
                return metadata.version(d)
            except metadata.PackageNotFoundError:
                continue
        return None

    return {
        "torch": ver("torch"),
        "transformers": ver("transformers"),
        "vlmeval": ver("ms-vlmeval", "vlmeval"),
        "python": platform.python_version(),
    }


def seconds_since_process_start() -> float | None:
    """How long this process has run (from /proc): the interpreter's and torch's start-up."""
    try:
        with open("/proc/self/stat") as fh:
            ticks = int(fh.read().rsplit(")", 1)[-1].split()[19])
        with open("/proc/stat") as fh:
            boot = next(int(line.split()[1]) for line in fh if line.startswith("btime"))
        return round(time.time() - (boot + ticks / os.sysconf("SC_CLK_TCK")), 3)
    except (OSError, ValueError, StopIteration, IndexError):
        return None


def cuda_facts() -> dict[str, Any]:
    import torch

    avail = torch.cuda.is_available()
    names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if avail else []
    return {
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "cuda_available": avail,
        "cuda_runtime": torch.version.cuda,
        "gpu_names": names,
    }
