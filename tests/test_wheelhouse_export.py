"""`wheelhouse export` through the real pip against a package index on the loopback (a stand-in
for a private mirror that needs a password and redirects to a storage host, as mirrors behind a
CDN do), then a build from the wheelhouse with the real uv.

What is checked: the index's credentials reach the index and never the host a file is
redirected to (the download still succeeds: that host needs none); the password reaches no
output, log or file; a second export asks nothing of the network; a damaged file is fetched
again; a file whose sha256 the lock does not pin is a one-line error; the wheelhouse builds the
env with no index.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import subprocess
import zipfile

import pytest

from .conftest import Workspace, spectravenv_exe
from .hubstub import HubStub
from .test_envs import one_line_error

USER, PASSWORD = "mirror-user", "mirror-pass-0123456789abcdef"
WHEEL = "demo_pkg-0.1-py3-none-any.whl"


def make_wheel(version: str = "0.1") -> bytes:
    """A real, installable pure-Python wheel of demo-pkg."""
    dist = f"demo_pkg-{version}.dist-info"
    files = {
        "demo_pkg/__init__.py": f"VERSION = {version!r}\n",
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: demo-pkg\nVersion: {version}\n",
        f"{dist}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    files[f"{dist}/RECORD"] = "\n".join([*record, f"{dist}/RECORD,,"]) + "\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(zipfile.ZipInfo(name, (2020, 1, 1, 0, 0, 0)), text)
    return buf.getvalue()


def lock_text(*hashes: str) -> str:
    pins = " \\\n".join(f"    --hash=sha256:{h}" for h in hashes)
    return f"demo-pkg==0.1 \\\n{pins}\n"


@pytest.fixture
def mirror():
    """(index on 127.0.0.1, storage on 127.0.0.2, the wheel's bytes)."""
    wheel = make_wheel()
    sha = hashlib.sha256(wheel).hexdigest()
    with HubStub() as index, HubStub(host="127.0.0.2") as storage:
        storage.add_file(WHEEL, wheel)
        page = f'<html><body><a href="/files/{WHEEL}#sha256={sha}">{WHEEL}</a></body></html>'
        # The index sends the project's page, and so its files, to the storage host.
        index.redirect("/files/simple/demo-pkg/", storage.add_file("simple/demo-pkg/", page.encode(), "text/html"))
        yield index, storage, wheel


def mini_ws(ws: Workspace, index: HubStub, lock: str) -> Workspace:
    (ws.cwd / "mini.lock").write_text(lock)
    with (ws.cwd / "spectravenv.toml").open("a") as f:
        f.write('\n[envs.mini]\npython = "3.10"\ntransformers = "4.37.2"\nlock = "mini.lock"\n'
                'verify = ["demo_pkg"]\n')  # fmt: skip
    host = index.url.removeprefix("http://")
    ws.env["UV_DEFAULT_INDEX"] = f"http://{USER}:{PASSWORD}@{host}/files/simple"
    return ws


def storage_gets(storage: HubStub) -> list[dict]:
    return storage.gets(f"/files/{WHEEL}")


def test_the_index_password_reaches_the_index_only_and_the_export_builds(ws, mirror, tmp_path):
    index, storage, wheel = mirror
    mini_ws(ws, index, lock_text(hashlib.sha256(wheel).hexdigest()))
    folder = tmp_path / "wheelhouse"

    proc = ws.run("wheelhouse", "export", str(folder), "mini")
    assert proc.returncode == 0, proc.stderr
    assert (folder / "wheels" / WHEEL).read_bytes() == wheel
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert any(r["authorization"] == basic for r in index.requests), index.requests
    # The page and the file came from the storage host, which never saw the password.
    assert storage_gets(storage) and all(r["authorization"] is None for r in storage.requests)
    assert not (folder / ".download").exists()
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["envs"]["mini"]["files"] == [f"wheels/{WHEEL}"]
    assert manifest["files"][f"wheels/{WHEEL}"]["sha256"] == hashlib.sha256(wheel).hexdigest()
    shown = [proc.stdout, proc.stderr, *(p.read_text(errors="replace") for p in folder.rglob("*")
                                         if p.is_file() and p.suffix != ".whl")]  # fmt: skip
    assert not any(PASSWORD in text for text in shown)

    # Everything is there: the next export asks the network nothing.
    before = len(index.requests) + len(storage.requests)
    again = ws.run("wheelhouse", "export", str(folder), "mini", check=True)
    assert "downloaded 0 files" in again.stdout and len(index.requests) + len(storage.requests) == before

    # A damaged file is fetched again (pip checks what its download folder holds).
    target = folder / "wheels" / WHEEL
    target.unlink()
    target.write_bytes(wheel[:-1] + bytes([wheel[-1] ^ 1]))
    fixed = ws.run("wheelhouse", "export", str(folder), "mini")
    assert fixed.returncode == 0, fixed.stderr
    assert target.read_bytes() == wheel and len(storage_gets(storage)) == 2

    # The wheelhouse builds the env with no index (and, where this machine allows, no network).
    no_net = ["unshare", "-n"] if shutil.which("unshare") and subprocess.run(
        ["unshare", "-n", "true"], capture_output=True).returncode == 0 else []  # fmt: skip
    ws.env["UV_CACHE_DIR"] = str(tmp_path / "empty-uv-cache")
    built = subprocess.run([*no_net, *spectravenv_exe(), "sync", "--wheelhouse", str(folder), "mini"],
                           cwd=ws.cwd, env=ws.env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert built.returncode == 0, built.stderr
    [env] = sorted((ws.home / "envs").glob("mini-*"))
    out = subprocess.run([env / "bin" / "python", "-c", "import demo_pkg; print(demo_pkg.VERSION)"],
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.stdout.strip() == "0.1"


def test_a_file_the_lock_does_not_pin_is_a_one_line_error_and_nothing_is_kept(ws, mirror, tmp_path):
    index, _, _ = mirror
    mini_ws(ws, index, lock_text("0" * 64))  # the index's file has another sha256
    folder = tmp_path / "wheelhouse"
    msg = one_line_error(ws.run("wheelhouse", "export", str(folder), "mini"))
    assert "pip could not download the files of env 'mini'" in msg
    assert "does not match the lock's sha256: demo-pkg==0.1" in msg and "full output:" in msg
    assert PASSWORD not in msg
    assert not (folder / "wheels" / WHEEL).exists() and not (folder / "manifest.json").exists()
