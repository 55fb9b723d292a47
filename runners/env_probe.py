"""Run inside an env: import the given modules and print one JSON line of versions.

Self-contained (stdlib only, plus what it is asked to import): it runs under the env's Python.
Used to verify a fresh build and to record provenance.
"""

import contextlib
import importlib
import importlib.metadata as md
import json
import sys

DISTRIBUTIONS = ("torch", "torchvision", "transformers", "ms-vlmeval", "accelerate", "llava-torch")


def main(modules: list[str]) -> None:
    for name in modules:
        importlib.import_module(name)  # a failure here is the answer: the env does not work
    versions = {}
    for dist in DISTRIBUTIONS:
        with contextlib.suppress(md.PackageNotFoundError):
            versions[dist.replace("ms-vlmeval", "vlmeval")] = md.version(dist)
    info = {"python": sys.version.split()[0], "versions": versions}
    if "torch" in sys.modules or "torch" in versions:
        try:
            import torch

            info["cuda_runtime"] = torch.version.cuda
        except ImportError:
            pass
    print(json.dumps(info, sort_keys=True))


if __name__ == "__main__":
    main(sys.argv[1:])
