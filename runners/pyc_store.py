"""Bytecode for an env, shared with every other env through one content store (stdlib only).

    <env>/bin/python pyc_store.py SITE_PACKAGES STORE

uv hardlinks an env's files to its cache, so two envs that lock the same package version share
the very same source file (one inode). Their bytecode would be identical too, except for the
path compiled into it; so each .py is compiled with a fixed, env-independent path (the import
system puts the real path back when it loads the file: `_imp._fix_co_filename`), and the .pyc
is kept once in STORE, keyed by the source file's identity (device, inode, mtime, size) and the
interpreter's cache tag, then hardlinked into each env's __pycache__. A second env of the same
torch build compiles only what it does not share: seconds instead of minutes, and megabytes
instead of hundreds of them.

Prints one JSON line: files seen, linked from the store, compiled, failed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import py_compile
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor


def key_of(path: str) -> str:
    st = os.stat(path)
    return f"{sys.implementation.cache_tag}-{st.st_dev:x}-{st.st_ino:x}-{st.st_mtime_ns:x}-{st.st_size:x}"


def place(src: str, dst: str) -> None:
    """Hardlink src to dst, replacing whatever is at dst (atomically)."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    tmp = f"{dst}.{os.getpid()}.link"
    os.link(src, tmp)
    os.replace(tmp, dst)


def compile_one(args: tuple[str, str, str, str]) -> bool:
    source, cfile, dfile, stored = args
    os.makedirs(os.path.dirname(cfile), exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".pyc-", dir=os.path.dirname(cfile))
    os.close(fd)
    try:
        py_compile.compile(source, cfile=tmp, dfile=dfile, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode.TIMESTAMP)  # fmt: skip
        os.chmod(tmp, 0o644)
        os.makedirs(os.path.dirname(stored), exist_ok=True)
        try:
            os.link(tmp, stored)
        except FileExistsError:
            pass  # another build stored the same file meanwhile: identical bytes
        os.replace(tmp, cfile)
        return True
    except (py_compile.PyCompileError, SyntaxError, ValueError, OSError):
        # A file that does not compile (Python 2 leftovers in some packages) gets no bytecode,
        # as with compileall.
        if os.path.exists(tmp):
            os.unlink(tmp)
        return False


def main(site: str, store: str) -> dict[str, int]:
    linked, todo = 0, []
    seen = 0
    for root, dirs, files in os.walk(site):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if not name.endswith(".py"):
                continue
            seen += 1
            source = os.path.join(root, name)
            key = key_of(source)
            stored = os.path.join(store, key[-2:], key + ".pyc")
            cfile = importlib.util.cache_from_source(source)
            if os.path.exists(stored):
                place(stored, cfile)
                linked += 1
            else:
                dfile = os.path.join("/spectravenv-env/site-packages", os.path.relpath(source, site))
                todo.append((source, cfile, dfile, stored))
    compiled = failed = 0
    if todo:
        with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            for ok in pool.map(compile_one, todo, chunksize=64):
                compiled += ok
                failed += not ok
    return {"files": seen, "linked": linked, "compiled": compiled, "failed": failed}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1], sys.argv[2])))
