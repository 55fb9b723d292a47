"""Keep `import vlmeval` working in every env: a model wrapper that cannot import becomes a placeholder.

VLMEvalKit imports every model wrapper eagerly (`vlmeval/vlm/__init__.py`), so one wrapper written
for another transformers release (say `vlm/thyme`, which needs `transformers.cache_utils`, absent
from 4.33) breaks `import vlmeval` for every model in that env. spectravenv copies this file into
each env's site-packages (as `_spectravenv_vlmeval_guard.py`, with a one-line `.pth` file that
imports it at start-up; both are spectravenv's own files, recorded in the env's key, and nothing
the lock installed is changed). It adds an import hook for the modules below `vlmeval.vlm` and
`vlmeval.api`: when one raises while it is executed, it is replaced by a placeholder module whose
every attribute is a placeholder class, and constructing one raises an ImportError that names the
class, the env and the original error. So `import vlmeval` and `supported_VLM` work everywhere,
and a model whose code cannot run here fails only when it is built, saying why.

Stdlib only, and cheap at start-up: nothing is imported until a `vlmeval` module is.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import sys
import traceback
from typing import Any

GUARDED = ("vlmeval.vlm.", "vlmeval.api.")
# The env's facts, written beside this module when spectravenv builds the env and named after it
# (`<module>.json`, spectravenv.envs.venv.ENV_INFO), so the name is spelled nowhere else; the
# module that reads it is this one (`env_info`, also what scripts/probe_env.py asks).
ENV_INFO = os.path.splitext(os.path.abspath(__file__))[0] + ".json"
_INFO: dict[str, Any] | None = None


def env_info() -> dict[str, Any]:
    """{"env": name, "transformers": version, "elsewhere": {class: env}} written at build time."""
    global _INFO  # read once per process, lazily: the .pth must not slow every start-up
    if _INFO is None:
        try:
            with open(ENV_INFO) as fh:
                _INFO = json.load(fh)
        except (OSError, ValueError):
            _INFO = {}
    return _INFO


class ModuleUnavailable(ImportError):
    """Raised when a placeholder is used: the wrapper's module could not be imported here."""


def _message(module: str, attr: str, error: str) -> str:
    info = env_info()
    env = info.get("env", "this env")
    tf = info.get("transformers")
    where = f"spectravenv env {env}" + (f" (transformers {tf})" if tf else "")
    other = info.get("elsewhere", {}).get(attr)
    hint = (
        f"; {attr} runs in env {other}: `spectravenv eval` picks it"
        if other
        else "; `spectravenv models --json` shows which env serves each model"
    )
    return f"{attr} is unavailable in {where}: importing {module} failed with {error}{hint}"


def _placeholder_class(module: str, attr: str, error: str) -> type:
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        raise ModuleUnavailable(_message(module, attr, error))

    return type(
        attr,
        (),
        {
            "__init__": __init__,
            "__module__": module,
            "__doc__": f"Placeholder: {module} could not be imported ({error}).",
            "_spectravenv_unavailable": error,
            # VLMEvalKit reads these class attributes without building the model.
            "INSTALL_REQ": False,
            "INTERLEAVE": False,
            "is_api": False,
        },
    )


def _make_placeholder(module: Any, error: str) -> None:
    name = module.__name__
    # Keep dunders, and the submodules this package had already imported: `from pkg import sub`
    # must still give the real, working submodule, not a placeholder class.
    keep = {
        k: v
        for k, v in vars(module).items()
        if (k.startswith("__") and k.endswith("__"))
        or (isinstance(v, type(sys)) and getattr(v, "__name__", "") == f"{name}.{k}")
    }
    vars(module).clear()
    vars(module).update(keep)
    made: dict[str, type] = {}

    def __getattr__(attr: str) -> Any:
        if attr.startswith("__") and attr.endswith("__"):
            raise AttributeError(attr)
        if attr not in made:
            made[attr] = _placeholder_class(name, attr, error)
        return made[attr]

    module.__getattr__ = __getattr__
    module._spectravenv_unavailable = error
    # A package whose __init__ failed: its submodules are looked up through __path__, keep it.


class _GuardedLoader(importlib.abc.Loader):
    def __init__(self, inner: importlib.abc.Loader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Any:
        return self.inner.create_module(spec)

    def exec_module(self, module: Any) -> None:
        try:
            self.inner.exec_module(module)
        except (Exception, SystemExit) as exc:  # research code exit()s on a missing dependency
            # The import system removes a failed module's children from sys.modules by itself;
            # this one stays, as a placeholder.
            last = traceback.extract_tb(exc.__traceback__)[-1:]
            where = f" at {os.path.basename(last[0].filename)}:{last[0].lineno}" if last else ""
            error = f"{type(exc).__name__}: {exc}".replace("\n", " ")[:400] + where
            _make_placeholder(module, error)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, is_package, ...
        return getattr(self.inner, name)


class _GuardFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if not fullname.startswith(GUARDED):
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _GuardedLoader(spec.loader)
        return spec


def install() -> None:
    if not any(isinstance(f, _GuardFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _GuardFinder())


install()
