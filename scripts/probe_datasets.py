"""What an env's VLMEvalKit knows of datasets, read inside that env (scripts/probe_env.py uses it).

For every name `vlmeval.dataset.build_dataset` accepts (the video configs of
`video_dataset_config.supported_video_datasets`, then the `supported_datasets()` of each class in
`DATASET_CLASSES`, the first class that lists a name winning, exactly as build_dataset looks
them up): the class that builds it, its TYPE and MODALITY, the TSV's URL and md5, a video config's
keyword arguments (frames, fps), and the judge `vlmeval/run.py` picks for it by default, got by
calling run.py's own `get_judge_kwargs` with run.py's own default arguments.

For every class, what reading its code tells (nothing is built, nothing is downloaded):
- whether its `evaluate` reaches a judge (`build_judge`, an OpenAI client, an API wrapper),
  following the calls it makes into VLMEvalKit's own functions and methods;
- whether that code has a path without one (it tests for "exact_matching", or falls back when
  the judge is not working) and whether it asserts a working judge;
- the video and image decoders its code imports (decord, av, cv2, ...) and which of them this
  env lacks.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import sys
import types
from collections.abc import Callable
from typing import Any

# Packages that read video frames (or animated images) in VLMEvalKit's dataset classes.
DECODERS = ("decord", "av", "cv2", "imageio", "moviepy", "torchcodec", "torchvision.io")
MAX_DEPTH = 6  # calls followed from evaluate(); VLMEvalKit's deepest judge call is 4 down


def jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return repr(v)


# ---- reading code -------------------------------------------------------------------------------

_MODULE_TREES: dict[str, ast.Module | None] = {}


def module_tree(module: str) -> ast.Module | None:
    """The parsed source of a module, once (a method's own source may not parse alone: a
    triple-quoted string at column 0 inside an indented method defeats dedent)."""
    if module not in _MODULE_TREES:
        try:
            _MODULE_TREES[module] = ast.parse(inspect.getsource(sys.modules[module]))
        except (OSError, TypeError, KeyError, SyntaxError):
            _MODULE_TREES[module] = None
    return _MODULE_TREES[module]


def function_node(fn: Callable[..., Any]) -> ast.AST | None:
    """The def of `fn` in its module's tree, found by the line its code starts on."""
    code = getattr(fn, "__code__", None)
    tree = module_tree(getattr(fn, "__module__", "") or "")
    if code is None or tree is None:
        return None
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            if code.co_firstlineno in (first, node.lineno):
                return node
    return None


def local_imports(node: ast.AST, module: str) -> dict[str, Any]:
    """Names a function imports in its body (`from .utils.x import f`), resolved."""
    out: dict[str, Any] = {}
    for inner in ast.walk(node):
        if not isinstance(inner, ast.ImportFrom):
            continue
        package = module.rsplit(".", inner.level)[0] if inner.level else ""
        target = ".".join(p for p in (package, inner.module or "") if p)
        try:
            mod = importlib.import_module(target)
        except Exception:
            continue
        for alias in inner.names:
            out[alias.asname or alias.name] = getattr(mod, alias.name, None)
    return out


def resolve(expr: ast.AST, fn: Callable[..., Any], cls: type, imports: dict[str, Any]) -> Any:
    """What a name inside `fn` stands for, where the code says so plainly: a name (imported in
    the body or the module), a method of the class (`self.x`, `cls.x`, `super().x`), a module's
    attribute. Names passed on (`track_progress_rich(f, ...)`, `{'mcq': f}`) count as calls."""
    scope = getattr(fn, "__globals__", {})
    if isinstance(expr, ast.Name) and isinstance(expr.ctx, ast.Load):
        return imports.get(expr.id) or scope.get(expr.id)
    if not isinstance(expr, ast.Attribute):
        return None
    owner = expr.value
    if isinstance(owner, ast.Call) and isinstance(owner.func, ast.Name) and owner.func.id == "super":
        return inherited(cls, fn, expr.attr)
    if isinstance(owner, ast.Name):
        if owner.id in ("self", "cls"):
            return getattr(cls, expr.attr, None)
        base = imports.get(owner.id) or scope.get(owner.id)
        if isinstance(base, types.ModuleType):
            return getattr(base, expr.attr, None)
    return None


def inherited(cls: type, fn: Callable[..., Any], name: str) -> Any:
    """`super().name` inside `fn`: the first definition after fn's own class in cls's MRO."""
    parts = fn.__qualname__.split(".")
    mro = list(cls.__mro__)
    owners = [i for i, k in enumerate(mro) if len(parts) > 1 and k.__name__ == parts[-2]]
    for klass in mro[owners[0] + 1 if owners else 1:]:
        if name in vars(klass):
            return getattr(klass, name)
    return None


def is_judge_door(target: Any, build_judge: Any) -> bool:
    """A call that makes a judge: build_judge, an OpenAI client, one of VLMEvalKit's API models."""
    module = getattr(target, "__module__", "") or ""
    return target is build_judge or module.startswith(("openai", "vlmeval.api"))


def _mentions_working(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "working" for n in ast.walk(node))


def _falls_back(node: ast.If) -> bool:
    """`if not judge.working(): judge = None`: a judge that does not answer is dropped."""
    return _mentions_working(node.test) and any(
        isinstance(s, ast.Assign) and isinstance(s.value, ast.Constant) and s.value.value is None
        for s in node.body
    )


def judge_facts(cls: type, build_judge: Any) -> dict[str, bool]:
    """Follow `cls.evaluate` through the VLMEvalKit functions and methods it calls."""
    facts = {"calls_judge": False, "exact_path": False, "asserts_judge": False}
    seen: set[Any] = set()
    todo: list[tuple[Any, int]] = [(getattr(cls, "evaluate", None), 0)]
    while todo:
        fn, depth = todo.pop()
        fn = getattr(fn, "__func__", fn)
        code = getattr(fn, "__code__", None)
        if code is None or code in seen or depth > MAX_DEPTH:
            continue
        seen.add(code)
        if not (getattr(fn, "__module__", "") or "").startswith("vlmeval."):
            continue
        node = function_node(fn)
        if node is not None:
            todo += [(t, depth + 1) for t in _scan(node, fn, cls, build_judge, facts)]
    return facts


def _scan(node: ast.AST, fn: Any, cls: type, build_judge: Any, facts: dict[str, bool]) -> list[Any]:
    """Note what one function's code shows; return the functions it calls or passes on, to follow."""
    imports = local_imports(node, fn.__module__)
    follow = []
    for inner in ast.walk(node):
        if (isinstance(inner, ast.Constant) and inner.value == "exact_matching") or (
                isinstance(inner, ast.If) and _falls_back(inner)):
            facts["exact_path"] = True
        elif isinstance(inner, ast.Assert) and _mentions_working(inner.test):
            facts["asserts_judge"] = True
        elif isinstance(inner, (ast.Name, ast.Attribute)):
            target = resolve(inner, fn, cls, imports)
            if target is not None and is_judge_door(target, build_judge):
                facts["calls_judge"] = True
            elif callable(target):
                follow.append(target)
    return follow


def media_imports(cls: type) -> list[str]:
    """Decoders the modules of the class and its VLMEvalKit bases import outside a try block (at
    the top or in a method): what reading its frames needs. One imported only inside `try` has a
    fallback (MVBench's moviepy), and is not needed."""
    found: set[str] = set()
    for klass in cls.__mro__:
        tree = module_tree(klass.__module__) if klass.__module__.startswith("vlmeval.") else None
        if tree is not None:
            found |= {d for d in DECODERS for n in _imported(tree) if n == d or n.startswith(d + ".")}
    return sorted(found)


def _imported(tree: ast.Module) -> set[str]:
    """Modules a tree imports, less those it imports only inside try blocks."""
    tried = {id(n) for t in ast.walk(tree) if isinstance(t, ast.Try) for b in t.body for n in ast.walk(b)}
    out = set()
    for node in ast.walk(tree):
        if id(node) in tried:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


# ---- run.py's judge -----------------------------------------------------------------------------


def run_py_judge() -> Callable[[str, str], str | None]:
    """`name, TYPE -> judge model` as vlmeval/run.py decides it when --judge is not given."""
    import vlmeval.run as run_py

    argv = sys.argv
    sys.argv = ["run.py", "--data", "x", "--model", "x"]
    try:
        args = run_py.parse_args()  # run.py's own defaults (api_nproc, retry, use_verifier, ...)
    finally:
        sys.argv = argv

    def judge(name: str, type_: str) -> str | None:
        return run_py.get_judge_kwargs(name, type_, args).get("model")

    return judge


# ---- the datasets -------------------------------------------------------------------------------


def lookup() -> dict[str, tuple[type, dict[str, Any]]]:
    """Every name build_dataset accepts -> (the class it builds, a video config's kwargs)."""
    from vlmeval.dataset import DATASET_CLASSES
    from vlmeval.dataset.video_dataset_config import supported_video_datasets

    out: dict[str, tuple[type, dict[str, Any]]] = {}
    for name, factory in supported_video_datasets.items():
        out[name] = (getattr(factory, "func", factory), dict(getattr(factory, "keywords", None) or {}))
    for cls in DATASET_CLASSES:
        try:
            names = cls.supported_datasets()
        except Exception:
            continue
        for name in names:
            out.setdefault(name, (cls, {}))
    return out


def type_and_modality(cls: type, name: str, classes: dict[str, tuple[type, dict[str, Any]]]) -> tuple[Any, Any]:
    """TYPE and MODALITY as the built dataset has them: a concatenation of several datasets
    (ConcatDataset) takes its parts' (they must agree), which its class does not set."""
    parts = getattr(cls, "DATASET_SETS", {}).get(name)
    if parts and parts[0] in classes:
        cls = classes[parts[0]][0]
    return getattr(cls, "TYPE", None), getattr(cls, "MODALITY", None)


def class_facts(cls: type, build_judge: Any) -> dict[str, Any]:
    from vlmeval.dataset.image_base import ImageBaseDataset

    media = media_imports(cls)
    evaluate = getattr(getattr(cls, "evaluate", None), "__func__", getattr(cls, "evaluate", None))
    # Loaded through the base class's prepare_tsv: DATASET_URL/MD5 describe its one TSV.
    standard = (getattr(cls, "load_data", None) is ImageBaseDataset.load_data
                and getattr(cls, "prepare_tsv", None) is ImageBaseDataset.prepare_tsv)  # fmt: skip
    return {
        "module": cls.__module__,
        # The evaluate() it runs, by the class that defines it: subclasses that inherit it write
        # the same score files (the catalog's headline rules name it).
        "evaluate": getattr(evaluate, "__qualname__", None),
        "type": getattr(cls, "TYPE", None),
        "modality": getattr(cls, "MODALITY", None),
        "standard": standard,
        **judge_facts(cls, build_judge),
        "media": media,
        "media_missing": [m for m in media if not installed(m)],
        "frames": frame_defaults(cls),
    }


def frame_defaults(cls: type) -> dict[str, Any] | None:
    """A video class's default frame sampling (nframe, fps), for names built without a config."""
    if getattr(cls, "MODALITY", None) != "VIDEO":
        return None
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):
        return None
    return {k: jsonable(params[k].default) for k in ("nframe", "fps") if k in params
            and params[k].default is not inspect.Parameter.empty} or None  # fmt: skip


def datasets() -> tuple[dict[str, Any], dict[str, Any]]:
    """({name: what build_dataset makes of it}, {class name: facts of its code})."""
    from vlmeval.dataset.utils.judge_util import build_judge

    judge = run_py_judge()
    classes = lookup()
    names: dict[str, Any] = {}
    facts: dict[str, Any] = {}
    for name, (cls, config) in sorted(classes.items()):
        if cls.__name__ not in facts:
            facts[cls.__name__] = class_facts(cls, build_judge)
        type_, modality = type_and_modality(cls, name, classes)
        urls, md5s = getattr(cls, "DATASET_URL", None), getattr(cls, "DATASET_MD5", None)
        names[name] = {
            "class": cls.__name__,
            "type": type_,
            "modality": modality,
            "url": (urls.get(name) if isinstance(urls, dict) else None) or None,
            "md5": (md5s.get(name) if isinstance(md5s, dict) else None) or None,
            "judge": judge(name, type_),
            "config": jsonable(config) if config else None,
            "parts": list(getattr(cls, "DATASET_SETS", {}).get(name, [])) or None,
        }
    return names, dict(sorted(facts.items()))
