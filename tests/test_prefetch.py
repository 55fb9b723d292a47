"""`spectravenv prefetch` against a stand-in hub and dataset server on 127.0.0.1 (tests/hubstub.py):
real CLI, real HTTP, the real huggingface_hub of the test env `tiny` downloading into a real cache.

What is checked: a TSV whose connection drops mid-file continues with a Range request and is
md5-checked; a TSV with another md5 is refused and not left as if good; a checkpoint download
killed mid-file continues where it stopped (huggingface_hub's `.incomplete` blob, Range) and is
verified file by file; what is complete is skipped without a request; a gated model without a
token is one clear error, and the token never reaches the console, a log or a file.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest
from svrunner.protocol import PREFETCH_KINDS, EventLog, EventReader, read_events
from svrunner.redact import Redactor

from .conftest import Workspace
from .hubstub import HubStub
from .test_envs import one_line_error

TOKEN = "hf_STUBtoken0123456789abcdefXYZ"
WEIGHTS = 24 << 20  # > huggingface_hub's 10 MB read chunk, so a cut file keeps a partial blob


def tsv_bytes(rows: int) -> bytes:
    """A VLMEvalKit MCQ TSV (text only: the format matters to VLMEvalKit, not to prefetch)."""
    lines = ["index\tquestion\tA\tB\tanswer\tcategory"]
    lines += [
        f"{i}\tIs {i} even?\tyes\tno\t{'A' if i % 2 == 0 else 'B'}\tparity" for i in range(rows)
    ]
    return ("\n".join(lines) + "\n").encode()


def weights(seed: int = 0) -> bytes:
    block = hashlib.sha256(str(seed).encode()).digest() * 32  # 1 KB, not compressible by accident
    return (block * (WEIGHTS // len(block) + 1))[:WEIGHTS]


def config(ws: Workspace, entries: str) -> None:
    base = (Path(__file__).parent / "data" / "spectravenv.toml").read_text()
    (ws.cwd / "spectravenv.toml").write_text(base + entries)


def model_entry(name: str, repo: str) -> str:
    return f'\n[models.{name}]\nenv = "tiny"\nclass = "LLaVA"\ncpu = true\nmodel_path = "{repo}"\n'


def bench_entry(name: str, url: str, md5: str) -> str:
    return f'\n[benchmarks.{name}]\nkind = "MCQ"\nurl = "{url}"\nmd5 = "{md5}"\nsamples = 10\n'


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One SPECTRAVENV_HOME for the module: the `tiny` env the hub downloads run in is built once."""
    return tmp_path_factory.mktemp("prefetch-home")


@pytest.fixture
def pws(ws: Workspace, shared_home: Path, tmp_path: Path) -> Workspace:
    ws.home = shared_home
    ws.env.update(SPECTRAVENV_HOME=str(shared_home), LMUData=str(tmp_path / "LMUData"),
                  HF_HOME=str(tmp_path / "hf"), HF_HUB_DISABLE_TELEMETRY="1")  # fmt: skip
    for var in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_TOKEN",
        "HF_HUB_CACHE",
        "HF_ENDPOINT",
    ):
        ws.env.pop(var, None)
    return ws


@pytest.fixture
def hub():
    with HubStub(token=TOKEN) as stub:
        yield stub


def lmudata(ws: Workspace) -> Path:
    return Path(ws.env["LMUData"])


def cache_folder(ws: Workspace, repo: str) -> Path:
    return Path(ws.env["HF_HOME"]) / "hub" / ("models--" + repo.replace("/", "--"))


def wait_for(cond, what: str, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


# ---- the download runner's events ----------------------------------------------------------------


def test_the_prefetch_events_are_the_protocols_own_lines_masked_and_kept_apart(tmp_path):
    """The download runner writes, and `prefetch` reads, with svrunner.protocol's writer and
    reader (one owner of the format), in a vocabulary of its own."""
    path = tmp_path / "events.jsonl"
    log = EventLog(str(path), "org/repo", 0, Redactor([TOKEN]), kinds=PREFETCH_KINDS)
    for kind in sorted(PREFETCH_KINDS):
        log.emit(kind, message=f"401 for token {TOKEN}")
    with pytest.raises(ValueError, match="unknown event kind 'job_done'"):
        log.emit("job_done", ok=1)
    log.close()
    assert TOKEN.encode() not in path.read_bytes()
    evs = EventReader(str(path), kinds=PREFETCH_KINDS).read()
    assert [e["event"] for e in evs] == sorted(PREFETCH_KINDS)
    assert all(e["job_id"] == "org/repo" and e["message"] == "401 for token ***" for e in evs)
    assert read_events(path) == []  # a job's reader takes none of them


# ---- TSVs ---------------------------------------------------------------------------------------


def test_a_dropped_tsv_download_continues_with_a_range_request_and_is_md5_checked(pws, hub):
    data = tsv_bytes(40000)  # ~1.4 MB
    url = hub.add_file("TinyBench.tsv", data)
    cut = len(data) // 2
    hub.drop_once("/files/TinyBench.tsv", cut)
    config(pws, bench_entry("TinyBench", url, hashlib.md5(data).hexdigest()))

    proc = pws.run("prefetch", "TinyBench")
    assert proc.returncode == 0, proc.stderr
    target = lmudata(pws) / "TinyBench.tsv"
    assert target.read_bytes() == data
    first, second = hub.gets("/files/TinyBench.tsv")
    assert first["range"] is None and second["range"] == f"bytes={cut}-"  # exactly what it had
    # Plain progress lines (no terminal here), then the verdict.
    assert "TinyBench.tsv [" in proc.stderr and "100%" in proc.stderr and "md5 ok" in proc.stderr
    assert not any((lmudata(pws) / ".spectravenv" / "downloads").iterdir())

    again = pws.run("prefetch", "TinyBench", check=True)
    assert len(hub.gets("/files/TinyBench.tsv")) == 2  # complete and verified: not fetched again
    assert "TinyBench: TSV md5 ok" in again.stderr
    dry = pws.run("prefetch", "--dry-run", "TinyBench", check=True)
    assert "present" in dry.stdout and "MISSING" not in dry.stdout


def test_the_hub_token_never_follows_a_redirect_to_another_host(pws, hub):
    """The hub answers a dataset file with a redirect to its storage host (a signed URL that needs
    no token), as huggingface.co does: the token reaches the hub, never the storage host."""
    data = tsv_bytes(500)
    path = "/datasets/stub-org/bench/resolve/main/TinyBench.tsv"
    with HubStub(host="127.0.0.2") as storage:
        hub.redirect(path, storage.add_file("TinyBench.tsv", data))
        pws.env["HF_ENDPOINT"] = hub.url
        (pws.cwd / ".env").write_text(f"HF_TOKEN={TOKEN}\n")
        url = f"https://huggingface.co{path}"  # fetched from HF_ENDPOINT, the site's hub
        config(pws, bench_entry("TinyBench", url, hashlib.md5(data).hexdigest()))
        proc = pws.run("prefetch", "TinyBench")
        assert proc.returncode == 0, proc.stderr
        assert (lmudata(pws) / "TinyBench.tsv").read_bytes() == data
        [asked] = hub.gets(path)
        assert asked["authorization"] == f"Bearer {TOKEN}"
        assert storage.gets("/files/TinyBench.tsv")
        assert all(r["authorization"] is None for r in storage.requests), storage.requests


def test_a_tsv_with_another_md5_is_refused_and_not_kept(pws, hub):
    data = tsv_bytes(100)
    url = hub.add_file("Wrong.tsv", data)
    expected = hashlib.md5(b"another version of the file").hexdigest()
    config(pws, bench_entry("WrongBench", url, expected))

    msg = one_line_error(pws.run("prefetch", "WrongBench"))
    assert "WrongBench" in msg and hashlib.md5(data).hexdigest() in msg and expected in msg
    assert not (lmudata(pws) / "WrongBench.tsv").exists()
    assert not any((lmudata(pws) / ".spectravenv" / "downloads").iterdir())
    # A file of another md5 put there by hand does not count as present either.
    (lmudata(pws) / "WrongBench.tsv").write_bytes(data)
    dry = pws.run("prefetch", "--dry-run", "WrongBench", check=True)
    assert "MISSING" in dry.stdout and "would download the file again" in dry.stdout
    assert "spectravenv prefetch WrongBench" in dry.stdout


def test_a_bad_md5_or_url_in_the_catalog_is_a_clear_error(pws):
    config(pws, bench_entry("Typo", "http://127.0.0.1:9/x.tsv", "not-an-md5"))
    assert "md5 must be 32 hex digits" in one_line_error(pws.run("prefetch", "Typo"))
    config(pws, bench_entry("Typo", "data/x.tsv", "0" * 32))
    assert "must be an http(s) URL" in one_line_error(pws.run("prefetch", "Typo"))


# ---- checkpoints --------------------------------------------------------------------------------


def test_a_killed_checkpoint_download_continues_where_it_stopped(pws, hub):
    blob = weights()
    cfg = b'{"model_type": "llava", "mm_vision_tower": "stub-org/tiny-tower"}'
    repo = hub.add_repo("stub-org/tiny-vlm", {"config.json": cfg, "model.safetensors": blob,
                                              "tokenizer/vocab.txt": b"a\nb\n"})  # fmt: skip
    hub.add_repo("stub-org/tiny-tower", {"config.json": b'{"model_type": "clip"}'})
    weights_path = f"/stub-org/tiny-vlm/resolve/{repo.sha}/model.safetensors"
    fault = hub.stall(weights_path, 16 << 20)
    pws.env["HF_ENDPOINT"] = hub.url
    config(pws, model_entry("tinyhub", "stub-org/tiny-vlm"))
    pws.run("sync", "tiny", check=True)  # the env the download runs in (built once per module)

    p = pws.popen("prefetch", "tinyhub")
    etag = hashlib.sha256(blob).hexdigest()
    partial = cache_folder(pws, "stub-org/tiny-vlm") / "blobs" / f"{etag}.incomplete"
    wait_for(lambda: fault.reached.is_set() and partial.exists() and partial.stat().st_size >= 10 << 20,
             "the first 10 MB to reach the cache")  # fmt: skip
    os.kill(p.pid, signal.SIGTERM)  # as a closed ssh session would (SIGHUP is handled alike)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    fault.released.set()
    kept = partial.stat().st_size
    assert kept >= 10 << 20

    proc = pws.run("prefetch", "tinyhub", timeout=600)
    assert proc.returncode == 0, proc.stderr
    gets = hub.gets(weights_path)
    assert gets[0]["range"] is None and gets[-1]["range"] == f"bytes={kept}-"
    snapshot = cache_folder(pws, "stub-org/tiny-vlm") / "snapshots" / repo.sha
    assert (snapshot / "model.safetensors").read_bytes() == blob
    assert (cache_folder(pws, "stub-org/tiny-vlm") / "refs" / "main").read_text() == repo.sha
    # Its config names a vision tower: fetched too, so an offline job finds it.
    assert "stub-org/tiny-tower" in proc.stderr
    assert (cache_folder(pws, "stub-org/tiny-tower") / "refs" / "main").exists()
    [manifest] = (Path(pws.env["HF_HOME"]) / "spectravenv" / "checkpoints").glob(
        "models--stub-org--tiny-vlm@*"
    )
    record = json.loads(manifest.read_text())
    assert record["commit"] == repo.sha and record["requires"] == ["stub-org/tiny-tower"]
    assert {f["name"]: f["size"] for f in record["files"]} == {
        "config.json": len(cfg),
        "model.safetensors": WEIGHTS,
        "tokenizer/vocab.txt": 4,
    }

    before = len(hub.requests)
    again = pws.run("prefetch", "tinyhub", check=True)
    assert len(hub.requests) == before, "a complete, verified checkpoint is not asked for again"
    assert "complete (3 files" in again.stderr


def test_a_corrupted_cached_file_counts_as_missing_and_is_fetched_again(pws, hub):
    hub.add_repo(
        "stub-org/small", {"config.json": b"{}", "model.safetensors": weights(1)[: 2 << 20]}
    )
    pws.env["HF_ENDPOINT"] = hub.url
    config(pws, model_entry("small", "stub-org/small"))
    pws.run("prefetch", "small", check=True, timeout=600)
    blob = next(
        p
        for p in (cache_folder(pws, "stub-org/small") / "blobs").iterdir()
        if p.stat().st_size > 1000
    )
    blob.write_bytes(blob.read_bytes()[:1000])  # truncated, as by a full disk
    dry = pws.run("prefetch", "--dry-run", "small", check=True)
    assert "MISSING" in dry.stdout and "model.safetensors has 1000 bytes" in dry.stdout
    blob.unlink()  # huggingface_hub keeps a blob it has; a truncated one has to go first
    pws.run("prefetch", "small", check=True, timeout=600)
    assert "MISSING" not in pws.run("prefetch", "--dry-run", "small", check=True).stdout


def test_a_gated_model_needs_a_token_and_the_token_is_never_shown(pws, hub):
    hub.add_repo(
        "stub-org/gated",
        {"config.json": b"{}", "model.safetensors": weights(2)[: 1 << 20]},
        gated=True,
    )
    pws.env["HF_ENDPOINT"] = hub.url
    config(pws, model_entry("gated", "stub-org/gated"))

    msg = one_line_error(pws.run("prefetch", "gated", timeout=600))
    assert "stub-org/gated is gated" in msg and "HF_TOKEN" in msg and ".env" in msg
    assert all(not r["authorised"] for r in hub.requests)

    (pws.cwd / ".env").write_text("HF_TOKEN=hf_wrongtoken_0123456789abcdef\n")
    msg = one_line_error(pws.run("prefetch", "gated", timeout=600))
    assert "has no access to it" in msg and "hf_wrongtoken" not in msg

    (pws.cwd / ".env").write_text(f"HF_TOKEN={TOKEN}\n")
    proc = pws.run("prefetch", "gated", timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert any(r["authorised"] for r in hub.requests)
    assert TOKEN not in proc.stdout + proc.stderr
    for root in (Path(pws.env["HF_HOME"]), lmudata(pws), pws.home / "logs", pws.cwd):
        for f in root.rglob("*") if root.exists() else []:
            if f.is_file() and not f.is_symlink() and f != pws.cwd / ".env":
                assert TOKEN.encode() not in f.read_bytes(), f


def test_prefetch_takes_the_names_eval_takes(pws):
    assert "neither a known model nor a benchmark" in one_line_error(pws.run("prefetch", "nosuch"))
    assert "name at least one model or benchmark" in one_line_error(pws.run("prefetch"))
    proc = pws.run("prefetch", "demo-tiny-llava", "DemoMCQ", check=True)
    assert "built in, no weights to fetch" in proc.stderr
