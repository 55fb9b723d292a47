"""The catalog read from TOML: the package's files plus users' overrides, checked key by key.

The shipped catalog lives in `catalog/data/*.toml`. A `spectravenv.toml` in
`$XDG_CONFIG_HOME/spectravenv/` and then in the working directory may add entries or override
fields of existing ones (same table layout: `[envs.X]`, `[models.X]`, `[benchmarks.X]`,
`[addons.X]`, `[suites.X]`). Relative paths in a file are relative to that file's folder.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Any

from spectravenv.catalog import samples
from spectravenv.catalog import suites as suite_tables
from spectravenv.catalog.entries import Addon, Benchmark, Catalog, Env, Model
from spectravenv.errors import SpectravenvError, did_you_mean
from spectravenv.paths import CATALOG_DIR, SHIPPED_LOCKS, Paths

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib


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
    "backend": str,
    "architecture": str,
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
    "judge": str,
    "judge_need": str,
    "judge_evidence": str,
    "headline_from": str,
    "no_headline": str,
    "samples_estimated": bool,
    "vlmeval_class": str,
    "vlmeval_type": str,
    "modality": str,
    "envs": list,
    "blocked": str,
    "decoders": list,
    "decoders_missing": dict,
    "frames": int,
    "fps": (int, float),
    "parts": list,
    "inference_only": bool,
    "note": str,
}
_SUITE_KEYS = {"benchmarks": list, "description": str}
JUDGE_NEEDS = ("none", "optional", "required")
BACKENDS = ("hf", "vllm")
MODALITIES = ("image", "multi-image", "video", "text")
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
    "suites": _SUITE_KEYS,
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
    if f.get("backend", "hf") not in BACKENDS:
        raise SpectravenvError(f"{f['__file__']}: model {name!r} has backend = {f['backend']!r}; "
                               f"use one of {', '.join(BACKENDS)}")  # fmt: skip
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
        backend=f.get("backend", "hf"),
        architecture=f.get("architecture", ""),
    )


def _check_benchmark(name: str, f: dict[str, Any]) -> None:
    where = f"{f['__file__']}: benchmarks.{name}"
    md5 = f.get("md5")
    if md5 is not None and not re.fullmatch(r"[0-9a-fA-F]{32}", md5):
        raise SpectravenvError(f"{where}.md5 must be 32 hex digits (`md5sum FILE` gives it), not {md5!r}")
    if f.get("url") and not f["url"].startswith(("http://", "https://")):
        raise SpectravenvError(f"{where}.url must be an http(s) URL, not {f['url']!r}; a local file is `tsv = \"PATH\"`")
    for key, allowed in (("judge_need", JUDGE_NEEDS), ("modality", MODALITIES)):
        if key in f and f[key] not in allowed:
            raise SpectravenvError(f"{where}.{key} must be one of {', '.join(allowed)}, not {f[key]!r}")


def _build_benchmark(name: str, f: dict[str, Any]) -> Benchmark:
    _check_benchmark(name, f)
    kind = f.get("kind", "MCQ")
    md5 = f.get("md5")
    return Benchmark(
        name=name,
        category=f.get("category", "" if "vlmeval_class" in f else "Custom"),  # only the old 24 of VLMEvalKit's have one
        kind=kind,
        metric=f.get("metric"),
        # A user's TSV is scored by VLMEvalKit's custom MCQ path unless it says otherwise.
        headline=f.get("headline", "Overall" if kind == "MCQ" and "vlmeval_class" not in f else None),
        scale=float(f.get("scale", 100 if kind == "MCQ" else 1)),
        per_sample=f.get("per_sample", False),
        headline_from=f.get("headline_from", ""),
        no_headline=f.get("no_headline", ""),
        samples=f.get("samples", 1000),
        samples_estimated=f.get("samples_estimated", "samples" not in f),
        since_vlmeval=f.get("since_vlmeval"),
        builtin=f.get("builtin"),
        tsv=_resolve(f["__dir__"], f["tsv"]) if "tsv" in f else None,
        experimental=f.get("experimental", False),
        url=f.get("url"),
        md5=md5.lower() if md5 else None,
        judge=f.get("judge"),
        judge_need=f.get("judge_need", "optional" if kind in ("MCQ", "Y/N") else "none"),
        judge_evidence=f.get("judge_evidence", ""),
        vlmeval_class=f.get("vlmeval_class", ""),
        vlmeval_type=f.get("vlmeval_type", ""),
        modality=f.get("modality", "image"),
        envs=tuple(f.get("envs", ())),
        blocked=f.get("blocked", ""),
        decoders=tuple(f.get("decoders", ())),
        decoders_missing={e: tuple(m) for e, m in f.get("decoders_missing", {}).items()},
        frames=f.get("frames"),
        fps=f.get("fps"),
        parts=tuple(f.get("parts", ())),
        inference_only=f.get("inference_only", False),
        note=f.get("note", ""),
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
    benchmarks = samples.counted({n: _build_benchmark(n, f) for n, f in merged["benchmarks"].items()}, paths)
    suites = {n: suite_tables.build(n, f, benchmarks) for n, f in merged["suites"].items()}
    suite_tables.check_names(suites, models, benchmarks)

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
    return Catalog(envs, models, benchmarks, addons, tuple(user), suites)
