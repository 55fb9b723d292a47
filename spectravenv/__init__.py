"""spectravenv: evaluate vision-language models across conflicting transformers versions."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("spectravenv")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
