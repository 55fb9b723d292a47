"""Air-gapped envs: `spectravenv wheelhouse export`, then a build from it with no network at all
(`unshare -n`: a network namespace with nothing but a downed loopback) and a fresh, empty uv
cache, and the demo run end to end there; a tampered or missing file; and `base_python` envs on
an interpreter that already holds torch.

Heavy: the export is the tf437 lock (~3 GB, torch with its CUDA libraries). It is kept in the
shared test cache (`~/.cache/spectravenv-tests/wheelhouse`), so only the first run on a machine
downloads it; later runs re-check every file's sha256 and download nothing.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from spectravenv.envs import locks
from spectravenv.envs.pythons import find_python
from spectravenv.envs.uv import uv_cmd
from spectravenv.paths import Paths

from .conftest import REPO, SHARED_CACHE, Workspace, base_env, spectravenv_exe, unavailable
from .test_envs import one_line_error

pytestmark = pytest.mark.heavy

ENV = "tf437"  # the env of demo-tiny-llava (catalog_data/models.toml)
LOCK = REPO / "locks" / f"{ENV}.lock"
WHEELHOUSE = SHARED_CACHE / "wheelhouse"
ENV_MARKER = ".spectravenv-env.json"
BASE_PTH = "_spectravenv_base.pth"  # in a base_python env's site-packages
# torch and what it needs from the tf437 lock: the "site's PyTorch" of the base_python tests.
TORCH_STACK = {"torch", "triton", "filelock", "typing-extensions", "sympy", "mpmath", "networkx",
               "jinja2", "markupsafe", "fsspec"}  # fmt: skip


def _can_unshare() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def no_net() -> list[str]:
    if _can_unshare():
        return ["unshare", "-n"]
    unavailable("`unshare -n` is not available here (it needs root or user namespaces)")


def run_cut_off(ws: Workspace, no_net: list[str], *args: str, timeout: float = 1200):
    """The real CLI with no network at all."""
    return subprocess.run([*no_net, *spectravenv_exe(), *args], cwd=ws.cwd, env=ws.env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)  # fmt: skip


def built_envs(home: Path, name: str = ENV) -> list[Path]:
    return sorted((home / "envs").glob(f"{name}-*")) if (home / "envs").is_dir() else []


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo env's wheelhouse, exported (or, when already there, re-checked) by the real
    command."""
    home = tmp_path_factory.mktemp("export-home")
    ws = Workspace(home, home / "home", base_env(home / "home"))
    started = time.monotonic()
    proc = ws.run("wheelhouse", "export", str(WHEELHOUSE), ENV, timeout=3600, check=True)
    print(f"wheelhouse export: {time.monotonic() - started:.0f} s; {proc.stdout.strip()}")
    return WHEELHOUSE


def test_the_export_holds_every_locked_file_and_a_built_wheel_for_the_sdist_only_one(wheelhouse):
    manifest = json.loads((wheelhouse / "manifest.json").read_text())
    entry = manifest["envs"][ENV]
    locked = locks.read(LOCK, ENV)
    assert entry["lock_sha256"] == locks.digest(LOCK) and entry["left_to_base"] == []
    derived = {p.name: p for p in locks.read(wheelhouse / entry["requirements"], ENV)}
    assert set(derived) == {p.name for p in locked}
    files = {f["sha256"]: (rel, f) for rel, f in manifest["files"].items()}
    for p in locked:
        [sha] = derived[p.name].hashes  # one file per package, for this Python and platform
        rel, f = files[sha]
        assert rel.startswith("wheels/") and rel.endswith(".whl") and (wheelhouse / rel).is_file()
        if f["origin"] == "built":
            # The lock pins only an sdist: the wheel was built from exactly that file.
            assert f["built_from_sha256"] in p.hashes and (wheelhouse / f["built_from"]).is_file()
        else:
            assert sha in p.hashes
    # polygon3 has no wheel on PyPI: nodes get the one built at export (no C compiler needed).
    assert files[derived["polygon3"].hashes[0]][1]["origin"] == "built"


@pytest.fixture(scope="module")
def air(wheelhouse: Path, no_net: list[str], tmp_path_factory: pytest.TempPathFactory):
    """tf437 built from the wheelhouse with no network, into a fresh SPECTRAVENV_HOME with a
    fresh, empty uv cache (nothing may come from a warm one). The base_python test builds in the
    same home and cache, so its files share inodes, and bytecode, with this env."""
    root = tmp_path_factory.mktemp("air")
    home = root / "home"
    ws = Workspace(root / "work", home, base_env(home))
    ws.cwd.mkdir()
    ws.env.update(
        UV_CACHE_DIR=str(root / "empty-uv-cache"),
        LMUData=str(root / "LMUData"),
        HF_HOME=str(root / "hf"),
        HF_HUB_OFFLINE="1",
    )
    started = time.monotonic()
    proc = run_cut_off(ws, no_net, "sync", "--wheelhouse", str(wheelhouse), ENV)
    assert proc.returncode == 0, proc.stderr
    print(f"offline build of {ENV} from the wheelhouse: {time.monotonic() - started:.0f} s")
    # ~6 GB of env and unpacked wheels, left to pytest's clean-up of old tmp folders (deleting
    # them here costs a minute and a half of CI's time for nothing).
    return ws


def in_air(air: Workspace, cwd: Path) -> Workspace:
    """A working directory of one's own in the air-gapped home."""
    cwd.mkdir()
    return Workspace(cwd, air.home, dict(air.env))


def test_an_env_built_from_the_wheelhouse_with_no_network_runs_the_demo(
    air, wheelhouse, no_net, tmp_path
):
    [env] = built_envs(air.home)
    marker = json.loads((env / ENV_MARKER).read_text())
    assert marker["wheelhouse"] == str(wheelhouse) and marker["installed"] == marker["packages"]
    assert marker["versions"]["transformers"] == "4.37.2"

    # SPECTRAVENV_WHEELHOUSE works as well as the flag; the env is ready, so it is reused.
    ws = in_air(air, tmp_path / "work")
    ws.env["SPECTRAVENV_WHEELHOUSE"] = str(wheelhouse)
    proc = run_cut_off(ws, no_net, "eval", "demo-tiny-llava", "DemoMCQ", "--limit", "4",
                       "--offline", "--run-name", "air")  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert "building env" not in proc.stderr and built_envs(air.home) == [env]
    run = ws.cwd / "outputs" / "air"
    assert json.loads((run / "run.json").read_text())["status"] == "finished"
    with (run / "results" / "summary.csv").open() as f:
        [row] = list(csv.DictReader(f))
    assert row["status"] == "done" and row["samples"] == "4"
    assert (run / "demo-tiny-llava" / "DemoMCQ" / "demo-tiny-llava_DemoMCQ_acc.csv").is_file()


def _linked_copy(src: Path, dest: Path) -> None:
    """The wheelhouse as hard links (GBs, copied in no time); a file to damage is replaced, never
    edited in place, so the shared wheelhouse stays whole."""
    for p in src.rglob("*"):
        if p.is_file() and not p.name.startswith("."):
            target = dest / p.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(p, target)
            except OSError:
                shutil.copy2(p, target)


def test_a_tampered_or_missing_file_is_a_one_line_error_naming_it(wheelhouse, no_net, tmp_path):
    copy = tmp_path / "wheelhouse"
    _linked_copy(wheelhouse, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    # The smallest wheel tf437 needs (the check is the same for every file).
    rel = min((r for r, f in manifest["files"].items() if ENV in f["needed_by"]
               and r.startswith("wheels/")), key=lambda r: manifest["files"][r]["size"])  # fmt: skip
    ws = Workspace(tmp_path / "work", tmp_path / "home", base_env(tmp_path / "home"))
    ws.cwd.mkdir()

    target = copy / rel
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01  # one byte changed
    target.unlink()
    target.write_bytes(bytes(data))
    msg = one_line_error(run_cut_off(ws, no_net, "sync", "--wheelhouse", str(copy), ENV))
    assert str(target) in msg and "tampered" in msg and "nothing was built" in msg
    assert built_envs(ws.home) == []

    target.unlink()
    msg = one_line_error(run_cut_off(ws, no_net, "sync", "--wheelhouse", str(copy), ENV))
    assert f"lacks {rel}" in msg and "nothing was built" in msg
    assert built_envs(ws.home) == []


# ---- base_python: an interpreter the site provides ---------------------------------------------


def _uv(*args: str, env: dict[str, str]) -> None:
    proc = subprocess.run(uv_cmd(*args), env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr


def make_base(folder: Path, names: set[str], wheelhouse: Path, env: dict[str, str]) -> Path:
    """A venv holding some packages of the tf437 lock, installed from the wheelhouse (no index):
    what a site's PyTorch module looks like to spectravenv."""
    python = find_python("3.10", Paths.from_env(env))  # pyenv shims answer uv only for one version
    _uv("venv", "--python", str(python), str(folder), env=env)
    packages = [p for p in locks.read(LOCK, ENV) if p.name in names]
    req = folder / "base-requirements.txt"
    req.write_text(locks.as_requirements(packages))
    _uv("pip", "install", "--python", str(folder / "bin" / "python"), "--no-deps", "--no-index",
        "--find-links", str(wheelhouse / "wheels"), "--require-hashes", "-r", str(req), env=env)  # fmt: skip
    return folder / "bin" / "python"


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*")}  # fmt: skip


def test_an_env_on_a_base_python_installs_only_what_the_base_lacks(
    air, wheelhouse, no_net, tmp_path
):
    ws = in_air(air, tmp_path / "work")
    nvidia = {p.name for p in locks.read(LOCK, ENV) if p.name.startswith("nvidia-")}
    base = make_base(tmp_path / "site-torch", TORCH_STACK | nvidia, wheelhouse, ws.env)
    (ws.cwd / "spectravenv.toml").write_text(f'[envs.{ENV}]\nbase_python = "{base}"\n')
    before = snapshot(tmp_path / "site-torch")

    # No index and no network (the GPU-machine case: a preinstalled torch and a wheelhouse).
    plain = built_envs(ws.home)
    proc = run_cut_off(ws, no_net, "sync", "--wheelhouse", str(wheelhouse), ENV)
    assert proc.returncode == 0, proc.stderr
    [env] = [p for p in built_envs(ws.home) if p not in plain]  # another key: another folder
    marker = json.loads((env / ENV_MARKER).read_text())
    assert marker["installed"] == marker["packages"] - len(TORCH_STACK | nvidia)
    assert marker["base_python"]["packages"]["torch"] == "2.1.2"
    installed = {p.name for p in locks.read(env / ".spectravenv-requirements.txt", ENV)}
    assert "transformers" in installed and not installed & (TORCH_STACK | nvidia)
    site = next((env / "lib").glob("python*/site-packages"))
    assert (site / BASE_PTH).is_file() and str(base.parent.parent) in (site / BASE_PTH).read_text()
    assert not (site / "torch").exists() and (site / "transformers").is_dir()
    where = subprocess.run([env / "bin" / "python", "-c", "import torch, transformers; "
                            "print(torch.__file__); print(transformers.__file__)"],
                           capture_output=True, text=True, timeout=300)  # fmt: skip
    torch_file, tf_file = where.stdout.split()
    assert torch_file.startswith(str(tmp_path / "site-torch")) and tf_file.startswith(str(env))

    # The demo end to end on it; run.json records the base and its packages.
    proc = run_cut_off(ws, no_net, "eval", "demo-tiny-llava", "DemoMCQ", "--limit", "2",
                       "--offline", "--run-name", "b")  # fmt: skip
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    manifest = json.loads((ws.cwd / "outputs" / "b" / "run.json").read_text())
    assert manifest["status"] == "finished"
    recorded = manifest["envs"][ENV]["base_python"]
    assert recorded["path"] == str(base) and recorded["packages"]["torch"] == "2.1.2"
    assert manifest["envs"][ENV]["key"] == env.name.rsplit("-", 1)[1]
    # Nothing was written into the base: no file added, changed or compiled there.
    assert snapshot(tmp_path / "site-torch") == before

    # A changed base (one more package, as a module update would bring) is another env.
    six = [p for p in locks.read(LOCK, ENV) if p.name == "six"]
    (tmp_path / "six.txt").write_text(locks.as_requirements(six))
    _uv("pip", "install", "--python", str(base), "--no-deps", "--no-index", "--find-links",
        str(wheelhouse / "wheels"), "--require-hashes", "-r", str(tmp_path / "six.txt"), env=ws.env)  # fmt: skip
    envs_out = ws.run("envs", check=True).stdout
    [row] = [ln for ln in envs_out.splitlines() if ln.startswith(f"{ENV} ")]
    assert "stale (built from an older lock or base" in row, envs_out


def test_a_base_whose_torch_or_transformers_cannot_serve_the_env_is_refused(
    wheelhouse, no_net, tmp_path
):
    ws = Workspace(tmp_path / "work", tmp_path / "home", base_env(tmp_path / "home"))
    ws.cwd.mkdir()
    # A base with tf437's transformers 4.37.2, for tf440 (transformers 4.40.2) ...
    tf_base = make_base(tmp_path / "site-tf", {"transformers"}, wheelhouse, ws.env)
    # ... and one with torch 2.1.2, for tf450 (torch 2.8.0).
    torch_base = make_base(tmp_path / "site-torch", {"torch"}, wheelhouse, ws.env)
    (ws.cwd / "spectravenv.toml").write_text(
        f'[envs.tf440]\nbase_python = "{tf_base}"\n\n[envs.tf450]\nbase_python = "{torch_base}"\n'
    )
    msg = one_line_error(run_cut_off(ws, no_net, "sync", "tf440"))
    assert f"env 'tf440' cannot run on base_python {tf_base}" in msg
    assert "the base has transformers 4.37.2, but the env declares transformers 4.40.2" in msg
    msg = one_line_error(run_cut_off(ws, no_net, "sync", "tf450"))
    assert f"env 'tf450' cannot run on base_python {torch_base}" in msg
    assert "the base has torch 2.1.2, but tf450.lock pins torch==2.8.0" in msg
    assert built_envs(ws.home, "tf440") == [] and built_envs(ws.home, "tf450") == []
