"""What an env's VLMEvalKit can do, read inside that env (stdlib + the env's packages only).

    <env>/bin/python scripts/probe_env.py OUT.json

For every `supported_VLM` name: its class, defining module and keyword arguments, whether the
class is real here or one of the import guard's placeholders (with the error), and for each
class, what reading its code tells (nothing is built, nothing is downloaded):
- the imports its methods make when a model is built (`from transformers import X` inside
  `__init__`, ...), and which of them this env cannot satisfy (a transformers name this release
  lacks, a package that is not installed);
- whether it can spread one model over several GPUs (it loads with device_map="auto", or splits
  the model itself).
And every dataset name its VLMEvalKit knows (image names and video configs), with what its
class's code tells: see scripts/probe_datasets.py.
scripts/gen_catalog.py turns the outputs of all envs into the catalog. Run them all with
`python scripts/probe_envs.py` (host side).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import json
import re
import sys
import textwrap

import probe_datasets  # beside this file: Python puts a script's folder first on sys.path

SPREADS = ('device_map="auto"', "device_map='auto'", "split_model(", "infer_auto_device_map(")


jsonable = probe_datasets.jsonable  # one converter for both probes



def class_sources(cls: type) -> list[str]:
    """The source of the class and of its VLMEvalKit base classes (a subclass may only tweak)."""
    out = []
    for klass in cls.__mro__:
        if klass is object or not klass.__module__.startswith("vlmeval.") or klass.__name__ == "BaseModel":
            continue
        try:
            out.append(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
    return out


def method_imports(sources: list[str]) -> list[list[str]]:
    """`from M import N` / `import M` statements inside function bodies (run when a model is built)."""
    seen: list[list[str]] = []
    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    for alias in node.names:
                        item = ["from", node.module, alias.name]
                        if item not in seen:
                            seen.append(item)
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        item = ["import", alias.name, ""]
                        if item not in seen:
                            seen.append(item)
    return seen


def in_try(sources: list[str]) -> set[str]:
    """Modules imported inside a try block (optional: a fallback exists)."""
    optional = set()
    for src in sources:
        try:
            tree = ast.parse(src)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Try):
                for inner in ast.walk(node):
                    if isinstance(inner, ast.ImportFrom) and inner.module:
                        optional.add(inner.module)
                    elif isinstance(inner, ast.Import):
                        optional.update(a.name for a in inner.names)
    return optional


def missing_imports(imports: list[list[str]], optional: set[str]) -> list[str]:
    import transformers

    out = []
    for kind, module, name in imports:
        if module in optional:
            continue
        top = module.split(".")[0]
        if top in ("vlmeval",) or top in sys.stdlib_module_names:
            continue
        try:
            found = importlib.util.find_spec(top) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(f"package {top}")
            continue
        if kind == "from" and module == "transformers" and not hasattr(transformers, name):
            out.append(f"transformers.{name}")
    return sorted(set(out))


_ENV_VAR = re.compile(r"""os\.(?:environ\.get|getenv|environ\[)\(?\s*['"]([A-Z][A-Z0-9_]+)['"]""")


def env_vars(cls: type, class_text: str) -> list[str]:
    """Environment variables the wrapper reads (API keys, base URLs): from its class and module."""
    try:
        module_text = inspect.getsource(sys.modules[cls.__module__])
    except (OSError, TypeError, KeyError):
        module_text = ""
    return sorted(set(_ENV_VAR.findall(class_text)) | set(_ENV_VAR.findall(module_text)))


def main(out_path: str) -> None:
    import transformers
    import vlmeval  # noqa: F401
    from vlmeval.config import supported_VLM

    guard = sys.modules.get("_spectravenv_vlmeval_guard")
    here = guard.env_info() if guard else {}  # the guard reads the env's facts beside itself
    from importlib import metadata

    placeholders = {
        name: mod._spectravenv_unavailable
        for name, mod in sorted(sys.modules.items())
        if name.startswith("vlmeval.") and getattr(mod, "_spectravenv_unavailable", None)
    }
    models, classes = {}, {}
    for name, factory in sorted(supported_VLM.items()):
        cls = getattr(factory, "func", factory)
        key = f"{cls.__module__}:{cls.__name__}"
        unavailable = getattr(cls, "_spectravenv_unavailable", None)
        models[name] = {
            "class": cls.__name__,
            "module": cls.__module__,
            "kwargs": jsonable(getattr(factory, "keywords", None) or {}),
            "unavailable": unavailable,
        }
        if key in classes:
            continue
        if unavailable:
            classes[key] = {"unavailable": unavailable}
            continue
        sources = class_sources(cls)
        imports = method_imports(sources)
        text = "\n".join(sources)
        classes[key] = {
            "multi_gpu": any(p in text for p in SPREADS),
            "imports": imports,
            "missing": missing_imports(imports, in_try(sources)),
            "is_api": bool(getattr(cls, "is_api", False)),
            "env_vars": env_vars(cls, text),
        }
    names, dataset_classes = probe_datasets.datasets()
    result = {
        "env": here.get("env"),
        "transformers": transformers.__version__,
        "vlmeval": metadata.version("ms-vlmeval"),
        "python": sys.version.split()[0],
        "placeholders": placeholders,
        "models": models,
        "classes": classes,
        "datasets": names,
        "dataset_classes": dataset_classes,
    }
    with open(out_path, "w") as fh:
        json.dump(result, fh, indent=1, sort_keys=True)
        fh.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
