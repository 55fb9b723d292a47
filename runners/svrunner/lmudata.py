"""What spectravenv keeps beside the datasets, in `<LMUData>/.spectravenv/`: one owner for its layout.

The runner (inside each env) and the host both name these paths through this module, so a lock
taken by one is the lock the other waits for, and a cached hash written by one is found by the
other.

    <LMUData>/.spectravenv/locks/<dataset>.lock   one job prepares (downloads, places) a dataset
                           sha256/<file>.sha256.json   a dataset file's sha256 by (size, mtime)
                           images-of/<dataset>        the sha256 of the TSV its images were decoded from
                           md5/<file>.md5.json        a TSV's md5 by (size, mtime) (`prefetch`)
                           downloads/<dataset>.tsv.part   a `prefetch` download under way
"""

from __future__ import annotations

import os

INTERNAL = ".spectravenv"


def internal(data_root: str) -> str:
    return os.path.join(data_root, INTERNAL)


def dataset_lock(data_root: str, name: str) -> str:
    """The lock a job holds while it places or downloads dataset `name` (VLMEvalKit writes an
    official TSV straight to `<LMUData>/<name>.tsv`, not atomically)."""
    return os.path.join(internal(data_root), "locks", f"{name}.lock")


def sha256_cache(data_root: str) -> str:
    """The folder of cached dataset hashes (svrunner.fingerprint.dataset_sha256)."""
    return os.path.join(internal(data_root), "sha256")


def images_stamp(data_root: str, name: str) -> str:
    """The digest of the user TSV whose images VLMEvalKit decoded into `<LMUData>/images/<name>/`."""
    return os.path.join(internal(data_root), "images-of", name)


def md5_cache(data_root: str) -> str:
    """The folder of cached TSV md5s, checked against VLMEvalKit's DATASET_MD5 (`prefetch`)."""
    return os.path.join(internal(data_root), "md5")


def download_part(data_root: str, name: str) -> str:
    """Where `prefetch` downloads dataset `name` before it is checked and moved into place."""
    return os.path.join(internal(data_root), "downloads", f"{name}.tsv.part")
