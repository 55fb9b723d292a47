"""What exists: envs, models, benchmarks and add-ons, from the package's TOML plus user overrides.

The shipped catalog lives in `catalog_data/*.toml`. A `spectravenv.toml` in
`$XDG_CONFIG_HOME/spectravenv/` and then in the working directory may add entries or override
fields of existing ones (same table layout: `[envs.X]`, `[models.X]`, `[benchmarks.X]`,
`[addons.X]`). Relative paths in a file are relative to that file's folder.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SpectravenvError, did_you_mean
from .paths import CATALOG_DIR, SHIPPED_LOCKS, Paths

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


@dataclass(frozen=True)
class Env:
    name: str
    python: str
    transformers: str
    lock: Path
    source: Path | None = None
    overrides: Path | None = None
    platform: str = "x86_64-manylinux_2_28"
    exclude_newer: str | None = None
    description: str = ""
    # Modules imported to prove a fresh build works (an env for tests may not carry vlmeval).
    verify: tuple[str, ...] = ("transformers", "vlmeval")
    # (VLMEvalKit class, the envs that run it) for classes this env does not serve: the import
    # guard names the right env when such a class cannot be imported here.
    elsewhere: tuple[tuple[str, str], ...] = ()
    # An interpreter the site provides (its torch, its CUDA build): the env is a venv of it that
    # sees its packages and holds, hash-locked, only what it lacks (envs.py, docs/air-gapped.md).
    # Kept as written, never resolved: a venv's `bin/python` is a link to another interpreter.
    base_python: Path | None = None


@dataclass(frozen=True)
class Addon:
    """A git-only package installed with a commit-pinned source, outside the env's lock."""

    name: str
    env: str
    source: str
    description: str = ""


@dataclass(frozen=True)
class Model:
    name: str
    env: str
    family: str = ""
    gpu_memory_gb: float = 24.0
    gpus: int = 1
    cpu: bool = False
    vlmeval_name: str | None = None
    cls: str | None = None
    builtin: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    addons: tuple[str, ...] = ()
    load_seconds: float = 60.0
    seconds_per_sample: float = 0.5
    # Can its wrapper spread one copy over several GPUs (it loads with device_map="auto")? A
    # wrapper that loads onto one device (`.cuda()`, device_map="cuda") cannot, whatever it needs.
    multi_gpu: bool = False
    checkpoint: str | None = None  # the weights it loads (hub id or path): identity, prefetch
    kind: str = "local"  # local | api (no weights, no GPU)
    vlmeval_class: str = ""  # the VLMEvalKit wrapper class (information; `cls` builds a model)
    needs: tuple[str, ...] = ()  # what it needs beyond its env's lock (some satisfied: see blocked)
    blocked: str = ""  # why it cannot run from the shipped envs: refused at plan time, saying so
    evidence: str = ""  # why this env
    memory_note: str = ""  # where gpu_memory_gb comes from (declared, estimated)
    verified: str = "none"  # none | lock builds | class imports | wrapper ran on a tiny checkpoint
    env_vars: tuple[str, ...] = ()  # variables an API wrapper reads (keys, base URLs: put them in .env)

    @property
    def origin(self) -> str:
        if self.builtin:
            return f"built-in {self.builtin}"
        if self.cls:
            return f"class {self.cls}"
        return f"VLMEvalKit {self.vlmeval_name}"


@dataclass(frozen=True)
class Benchmark:
    name: str
    category: str = "Custom"
    kind: str = "MCQ"
    metric: str | None = None
    headline: str | None = None  # the sub-score (key in the flattened score file) to headline
    scale: float = 1.0  # multiplies the headline into 0-100
    # The headline is a count of correct answers (OCRBench's "Final Score"): 0-100 is
    # count / samples evaluated x 100, which stays right under --limit.
    per_sample: bool = False
    samples: int = 1000
    since_vlmeval: str | None = None
    builtin: str | None = None
    tsv: Path | None = None
    experimental: bool = False
    # Where its TSV comes from: VLMEvalKit's DATASET_URL / DATASET_MD5 for official sets
    # (generated into catalog_data/vlmeval_datasets.toml), or a user's own for a custom set.
    # `spectravenv prefetch` downloads it to $LMUData/<name>.tsv and checks the md5.
    url: str | None = None
    md5: str | None = None


@dataclass(frozen=True)
class Catalog:
    envs: dict[str, Env]
    models: dict[str, Model]
    benchmarks: dict[str, Benchmark]
    addons: dict[str, Addon]
    sources: tuple[Path, ...] = ()

    def env(self, name: str) -> Env:
        if name not in self.envs:
            raise SpectravenvError(
                f"unknown env {name!r}{did_you_mean(name, self.envs)}; "
                f"known envs: {', '.join(sorted(self.envs))}"
            )
        return self.envs[name]

    def model(self, name: str) -> Model:
        if name not in self.models:
            raise SpectravenvError(
                f"unknown model {name!r}{did_you_mean(name, self.models)}; "
                "`spectravenv models` lists them"
            )
        return self.models[name]

    def benchmark(self, name: str) -> Benchmark:
        if name not in self.benchmarks:
            raise SpectravenvError(
                f"unknown benchmark {name!r}{did_you_mean(name, self.benchmarks)}; "
                "`spectravenv benchmarks` lists them"
            )
        return self.benchmarks[name]

    def classify(self, names: list[str]) -> tuple[list[str], list[str]]:
        """Split free names into (models, benchmarks); unknown or ambiguous names are errors."""
        models: list[str] = []
        benchmarks: list[str] = []
        for name in names:
            is_model, is_bench = name in self.models, name in self.benchmarks
            if is_model and is_bench:
                raise SpectravenvError(
                    f"{name!r} is both a model and a benchmark; say which with -m/--model or -d/--data"
                )
            if is_model:
                models.append(name)
            elif is_bench:
                benchmarks.append(name)
            else:
                every = list(self.models) + list(self.benchmarks)
                raise SpectravenvError(
                    f"{name!r} is neither a known model nor a benchmark{did_you_mean(name, every)}; "
                    "`spectravenv models` and `spectravenv benchmarks` list them"
                )
        return models, benchmarks

    def models_of_env(self, env: str) -> list[str]:
        return sorted(m.name for m in self.models.values() if m.env == env)

    def select_models(self, *, env: str | None = None, family: str | None = None,
                      kind: str | None = None, runnable: bool = False) -> list[Model]:  # fmt: skip
        """Models matching every filter given, sorted by env then name; a filter value that
        matches nothing known is an error with suggestions, never an empty answer."""
        if env is not None:
            self.env(env)
        families = {m.family for m in self.models.values()}
        if family is not None and family not in families:
            raise SpectravenvError(f"unknown family {family!r}{did_you_mean(family, families)}; "
                                   "`spectravenv models` shows each model's family")  # fmt: skip
        if kind not in (None, "local", "api"):
            raise SpectravenvError(f"--kind {kind!r}: give local or api")
        return sorted(
            (m for m in self.models.values()
             if (env is None or m.env == env) and (family is None or m.family == family)
             and (kind is None or m.kind == kind) and (not runnable or not m.blocked)),
            key=lambda m: (m.env, m.name),
        )  # fmt: skip


def model_record(m: Model) -> dict[str, Any]:
    """A model as `spectravenv models --json` lists it."""
    return {
        "name": m.name,
        "env": m.env,
        "kind": m.kind,
        "family": m.family,
        "class": m.vlmeval_class or m.cls or (f"builtin {m.builtin}" if m.builtin else None),
        "checkpoint": m.checkpoint or m.kwargs.get("model_path"),
        "gpu_memory_gb": m.gpu_memory_gb,
        "memory_note": m.memory_note,
        "gpus": 0 if m.kind == "api" else m.gpus,
        "multi_gpu": m.multi_gpu,
        "env_vars": list(m.env_vars),
        "cpu": m.cpu,
        "needs": list(m.needs),
        "runnable": not m.blocked,
        "blocked": m.blocked or None,
        "verified": m.verified,
        "evidence": m.evidence,
        "kwargs": m.kwargs,
        "addons": list(m.addons),
    }


# ---- loading -----------------------------------------------------------------------------------

_ENV_KEYS = {
    "python": str,
    "transformers": str,
    "lock": str,
    "source": str,
    "overrides": str,
    "platform": str,
    "exclude_newer": str,
    "description": str,
    "verify": list,
    "base_python": str,
}
_ADDON_KEYS = {"env": str, "source": str, "description": str}
_MODEL_KEYS = {
    "env": str,
    "family": str,
    "gpu_memory_gb": (int, float),
    "gpus": int,
    "cpu": bool,
    "vlmeval_name": str,
    "class": str,
    "builtin": str,
    "kwargs": dict,
    "model_path": str,
    "addons": list,
    "load_seconds": (int, float),
    "seconds_per_sample": (int, float),
    "multi_gpu": bool,
    "checkpoint": str,
    "kind": str,
    "vlmeval_class": str,
    "needs": list,
    "blocked": str,
    "evidence": str,
    "memory_note": str,
    "verified": str,
    "env_vars": list,
}
_BENCH_KEYS = {
    "category": str,
    "kind": str,
    "metric": str,
    "headline": str,
    "scale": (int, float),
    "per_sample": bool,
    "samples": int,
    "since_vlmeval": str,
    "builtin": str,
    "tsv": str,
    "experimental": bool,
    "url": str,
    "md5": str,
}
_KIND_NAMES = {
    str: "a string",
    int: "an integer",
    bool: "true or false",
    list: "a list",
    dict: "a table",
    (int, float): "a number",
}
_SECTIONS = {
    "envs": _ENV_KEYS,
    "addons": _ADDON_KEYS,
    "models": _MODEL_KEYS,
    "benchmarks": _BENCH_KEYS,
}


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise SpectravenvError(f"{path}: not valid TOML ({e}); fix or remove the file") from None
    except OSError as e:
        raise SpectravenvError(f"cannot read {path}: {e.strerror}") from None


def _check_entries(
    path: Path, data: dict[str, Any], base: Path
) -> dict[str, dict[str, dict[str, Any]]]:
    """Validate a file's tables and keys; a typo is an error, never silently ignored."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for section, entries in data.items():
        if section not in _SECTIONS:
            raise SpectravenvError(
                f"{path}: unknown table [{section}]{did_you_mean(section, _SECTIONS)}; "
                f"expected one of {', '.join(f'[{s}.NAME]' for s in _SECTIONS)}"
            )
        if not isinstance(entries, dict):
            raise SpectravenvError(f"{path}: [{section}] must hold tables like [{section}.NAME]")
        allowed = _SECTIONS[section]
        for name, fields in entries.items():
            if not isinstance(fields, dict):
                raise SpectravenvError(f"{path}: {section}.{name} must be a table")
            for key, value in fields.items():
                if key not in allowed:
                    raise SpectravenvError(
                        f"{path}: {section}.{name} has unknown key {key!r}"
                        f"{did_you_mean(key, allowed)}"
                    )
                expected = allowed[key]
                if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
                    raise SpectravenvError(
                        f"{path}: {section}.{name}.{key} must be {_KIND_NAMES[expected]}, "
                        f"not {value!r}"
                    )
            out.setdefault(section, {})[name] = {**fields, "__dir__": base, "__file__": path}
    return out


def _resolve(base: Path, value: str) -> Path:
    p = Path(value).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def _class_homes(models: dict[str, dict[str, Any]]) -> dict[str, set[str]]:
    """VLMEvalKit class -> the envs whose shipped models run it (for the import guard's hints).

    From the shipped catalog only, so a user's overrides never change what an env is built of."""
    homes: dict[str, set[str]] = {}
    for f in models.values():
        if f.get("vlmeval_class") and not f.get("blocked") and f.get("kind", "local") == "local":
            homes.setdefault(f["vlmeval_class"], set()).add(f["env"])
    return homes


def _build_env(name: str, f: dict[str, Any], homes: dict[str, set[str]]) -> Env:
    for key in ("python", "transformers", "lock"):
        if key not in f:
            raise SpectravenvError(f"{f['__file__']}: env {name!r} needs a {key!r} key")
    base = f["__dir__"]

    def opt(key: str) -> Path | None:
        return _resolve(base, f[key]) if key in f else None

    return Env(
        name=name,
        python=f["python"],
        transformers=f["transformers"],
        lock=_resolve(base, f["lock"]),
        source=opt("source"),
        overrides=opt("overrides"),
        platform=f.get("platform", "x86_64-manylinux_2_28"),
        exclude_newer=f.get("exclude_newer"),
        description=f.get("description", ""),
        verify=tuple(f.get("verify", ("transformers", "vlmeval"))),
        elsewhere=tuple(sorted((cls, ", ".join(sorted(e))) for cls, e in homes.items() if name not in e)),
        base_python=_base_python(name, f),
    )


def _base_python(name: str, f: dict[str, Any]) -> Path | None:
    """An interpreter path, relative to the file that gives it; symlinks are kept (a venv's
    python links to the interpreter it was made from, whose packages are not the venv's)."""
    value = f.get("base_python")
    if value is None:
        return None
    if not value.strip():
        raise SpectravenvError(
            f"{f['__file__']}: env {name!r} has an empty base_python; give the path of a Python "
            "interpreter (e.g. /opt/site/bin/python3.10) or leave the key out"
        )
    p = Path(value).expanduser()
    return Path(os.path.normpath(p if p.is_absolute() else f["__dir__"] / p))


def _build_model(name: str, f: dict[str, Any]) -> Model:
    if "env" not in f:
        raise SpectravenvError(
            f"{f['__file__']}: model {name!r} needs an 'env' key (e.g. env = \"tf437\")"
        )
    kwargs = dict(f.get("kwargs", {}))
    if "model_path" in f:
        # A local checkpoint is resolved against the config file; a hub id ("org/name") is kept.
        mp = f["model_path"]
        local = mp.startswith(("/", ".", "~"))
        kwargs["model_path"] = str(_resolve(f["__dir__"], mp)) if local else mp
    cls, builtin = f.get("class"), f.get("builtin")
    if f.get("gpus", 1) > 1 and not f.get("multi_gpu", False):
        raise SpectravenvError(
            f"{f['__file__']}: model {name!r} has gpus = {f['gpus']} but not multi_gpu = true; only a "
            'wrapper that loads with device_map="auto" can spread one copy over several GPUs'
        )
    return Model(
        name=name,
        env=f["env"],
        family=f.get("family", ""),
        gpu_memory_gb=float(f.get("gpu_memory_gb", 24.0)),
        gpus=f.get("gpus", 1),
        cpu=f.get("cpu", False),
        # A plain catalog model is a VLMEvalKit supported_VLM name unless it says otherwise.
        vlmeval_name=None if (cls or builtin) else f.get("vlmeval_name", name),
        cls=cls,
        builtin=builtin,
        kwargs=kwargs,
        addons=tuple(f.get("addons", ())),
        load_seconds=float(f.get("load_seconds", 60.0)),
        seconds_per_sample=float(f.get("seconds_per_sample", 0.5)),
        multi_gpu=f.get("multi_gpu", False),
        checkpoint=f.get("checkpoint"),
        kind=f.get("kind", "local"),
        vlmeval_class=f.get("vlmeval_class", cls or ""),
        needs=tuple(f.get("needs", ())),
        blocked=f.get("blocked", ""),
        evidence=f.get("evidence", ""),
        memory_note=f.get("memory_note", ""),
        verified=f.get("verified", "none"),
        env_vars=tuple(f.get("env_vars", ())),
    )


def _build_benchmark(name: str, f: dict[str, Any]) -> Benchmark:
    kind = f.get("kind", "MCQ")
    md5 = f.get("md5")
    if md5 is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
        raise SpectravenvError(f"{f['__file__']}: benchmarks.{name}.md5 must be 32 hex digits "
                               f"(`md5sum FILE` gives it), not {md5!r}")  # fmt: skip
    if f.get("url") and not f["url"].startswith(("http://", "https://")):
        raise SpectravenvError(f"{f['__file__']}: benchmarks.{name}.url must be an http(s) URL, "
                               f"not {f['url']!r}; a local file is `tsv = \"PATH\"`")  # fmt: skip
    return Benchmark(
        name=name,
        category=f.get("category", "Custom"),
        kind=kind,
        metric=f.get("metric"),
        # A user's TSV is scored by VLMEvalKit's custom MCQ path unless it says otherwise.
        headline=f.get("headline", "Overall" if kind == "MCQ" else None),
        scale=float(f.get("scale", 100 if kind == "MCQ" else 1)),
        per_sample=f.get("per_sample", False),
        samples=f.get("samples", 1000),
        since_vlmeval=f.get("since_vlmeval"),
        builtin=f.get("builtin"),
        tsv=_resolve(f["__dir__"], f["tsv"]) if "tsv" in f else None,
        experimental=f.get("experimental", False),
        url=f.get("url"),
        md5=md5.lower() if md5 else None,
    )


def _merge(
    files: list[tuple[Path, dict[str, Any], Path]],
) -> dict[str, dict[str, dict[str, Any]]]:
    merged: dict[str, dict[str, dict[str, Any]]] = {s: {} for s in _SECTIONS}
    for path, data, base in files:
        for section, entries in _check_entries(path, data, base).items():
            for name, fields in entries.items():
                # An override keeps the fields it does not mention, but paths it gives are
                # relative to its own file.
                old = _absolute_paths(section, merged[section].get(name, {}), fields)
                merged[section][name] = {**old, **fields}
    return merged


# Keys holding paths relative to the file that gives them (see _build_env, _build_model, ...).
_PATH_KEYS = {
    "envs": ("lock", "source", "overrides", "base_python"),
    "models": ("model_path",),
    "benchmarks": ("tsv",),
}


def _absolute_paths(section: str, old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """`old` with the relative paths that `new` (an override from another file, which brings its
    own __dir__) leaves alone made absolute against old's folder: `[envs.tf437] base_python =
    "..."` in a user's file keeps the shipped lock."""
    if not old:
        return old
    out = dict(old)
    for key in _PATH_KEYS.get(section, ()):
        value = old.get(key)
        if key in new or not isinstance(value, str) or Path(value).expanduser().is_absolute():
            continue
        if key == "model_path" and not value.startswith("."):
            continue  # a hub id ("org/name"), not a path
        # base_python keeps symlinks (a venv's python links elsewhere): normpath, not resolve.
        p = Path(value).expanduser()
        out[key] = str(os.path.normpath(old["__dir__"] / p) if key == "base_python"
                       else _resolve(old["__dir__"], value))  # fmt: skip
    return out


def load(paths: Paths) -> Catalog:
    # Paths in the shipped catalog (lock, source, overrides) are relative to the shipped locks/;
    # paths in a user's file are relative to that file's folder.
    shipped = [(p, _read_toml(p), SHIPPED_LOCKS) for p in sorted(CATALOG_DIR.glob("*.toml"))]
    user = [p.resolve() for p in paths.config_files if p.is_file()]
    merged = _merge(shipped + [(p, _read_toml(p), p.parent) for p in user])

    homes = _class_homes(_merge(shipped)["models"])
    envs = {n: _build_env(n, f, homes) for n, f in merged["envs"].items()}
    addons = {
        n: Addon(n, f.get("env", ""), f.get("source", ""), f.get("description", ""))
        for n, f in merged["addons"].items()
    }
    models = {n: _build_model(n, f) for n, f in merged["models"].items()}
    defined_in = {n: f["__file__"] for n, f in merged["models"].items()}
    benchmarks = {n: _build_benchmark(n, f) for n, f in merged["benchmarks"].items()}

    for m in models.values():
        if m.env not in envs:
            raise SpectravenvError(
                f"{defined_in[m.name]}: model {m.name!r} names env {m.env!r}, which is not in "
                "the catalog"
                f"{did_you_mean(m.env, envs)}"
            )
        for a in m.addons:
            if a not in addons:
                raise SpectravenvError(
                    f"{defined_in[m.name]}: model {m.name!r} names unknown add-on {a!r}"
                )
    return Catalog(envs, models, benchmarks, addons, tuple(user))
