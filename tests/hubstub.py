"""A stand-in for the Hugging Face hub and for dataset download servers, on 127.0.0.1.

It speaks the part of the hub's HTTP API that huggingface_hub's downloads use (read from
huggingface_hub 0.36 and 2.x: `HfApi.model_info`, `hf_hub_download`):

- `GET /api/models/{org}/{name}[/revision/{rev}]` -> `{"id", "sha", "siblings": [{"rfilename",
  "size", "blobId", "lfs": {"sha256", "size", "pointerSize"}}], ...}` (what `?blobs=true` adds is
  always there); a dataset repo (`add_repo(..., repo_type="dataset")`, what `snapshot_download(
  repo_type="dataset")` asks) the same under `/api/datasets/`;
- `HEAD|GET /{org}/{name}/resolve/{rev}/{path}` (a dataset's under `/datasets/`) with `X-Repo-Commit`, `ETag` (the git blob id of a
  regular file), `X-Linked-Etag` / `X-Linked-Size` (the sha256 and size of an LFS file), and
  `Range` requests answered with 206 and `Content-Range`;
- errors as the hub sends them: 401 with `X-Error-Code: GatedRepo` for a gated repo without
  `Authorization: Bearer <token>`, `RepoNotFound`, `RevisionNotFound`, `EntryNotFound`.

Plain files (`add_file`) are served at `/files/<path>` with the same Range support, for dataset
URLs. Every request is recorded (method, path, Range, whether it was authorised, the
Authorization header itself), and a file can be made to fail on purpose: `drop_once` sends the
full headers, part of the body, then closes the connection (once); `stall` sends part of the body
and then waits until `release()`. `redirect` answers a path with a 302 to another URL (a file on
another stub, say: HubStub(host="127.0.0.2") is another host on the same machine, as Linux
routes all of 127.0.0.0/8 to the loopback).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_THRESHOLD = 1 << 20  # bigger files (and weights) are LFS files, as on the hub


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class StubFile:
    data: bytes
    lfs: bool

    @property
    def etag(self) -> str:
        return hashlib.sha256(self.data).hexdigest() if self.lfs else git_blob_id(self.data)


@dataclass
class StubRepo:
    repo_id: str
    files: dict[str, StubFile]
    gated: bool = False
    repo_type: str = "model"  # or "dataset"

    @property
    def sha(self) -> str:
        h = hashlib.sha1(self.repo_id.encode())
        for name, f in sorted(self.files.items()):
            h.update(f"{name}\0{f.etag}\n".encode())
        return h.hexdigest()

    def info(self) -> dict:
        siblings = []
        for name, f in sorted(self.files.items()):
            s = {"rfilename": name, "size": len(f.data), "blobId": git_blob_id(f.data)}
            if f.lfs:
                s["lfs"] = {"sha256": f.etag, "size": len(f.data), "pointerSize": 134}
            siblings.append(s)
        return {"id": self.repo_id, "modelId": self.repo_id, "sha": self.sha, "private": False,
                "gated": "manual" if self.gated else False, "disabled": False,
                "siblings": siblings, "tags": []}  # fmt: skip


@dataclass
class Fault:
    at: int  # bytes of the body sent before the fault
    kind: str  # "drop" | "stall"
    times: int = 1
    released: threading.Event = field(default_factory=threading.Event)
    reached: threading.Event = field(default_factory=threading.Event)


class HubStub:
    def __init__(self, token: str | None = None, host: str = "127.0.0.1") -> None:
        self.token = token
        self.repos: dict[str, StubRepo] = {}
        self.files: dict[str, bytes] = {}
        self.faults: dict[str, Fault] = {}
        self.redirects: dict[str, str] = {}
        self.content_types: dict[str, str] = {}
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> HubStub:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self.faults.values():
            f.released.set()
        self._server.shutdown()
        self._server.server_close()

    # -- content ------------------------------------------------------------------------------

    def add_repo(self, repo_id: str, files: dict[str, bytes], *, gated: bool = False,
                 repo_type: str = "model") -> StubRepo:  # fmt: skip
        stub = {n: StubFile(d, len(d) > LFS_THRESHOLD or n.endswith((".safetensors", ".bin")))
                for n, d in files.items()}  # fmt: skip
        self.repos[repo_id] = StubRepo(repo_id, stub, gated, repo_type)
        return self.repos[repo_id]

    def add_file(self, path: str, data: bytes, content_type: str | None = None) -> str:
        """Serve `data` at /files/<path> (a path ending in "/" is a folder's page, e.g. a PEP 503
        index page with content_type "text/html")."""
        self.files[path] = data
        if content_type:
            self.content_types[path] = content_type
        return f"{self.url}/files/{path}"

    def redirect(self, url_path: str, location: str) -> str:
        """Answer `url_path` with a 302 to `location`; returns the URL of `url_path` here."""
        self.redirects[url_path] = location
        return f"{self.url}{url_path}"

    def drop_once(self, url_path: str, at: int) -> Fault:
        self.faults[url_path] = Fault(at, "drop")
        return self.faults[url_path]

    def stall(self, url_path: str, at: int) -> Fault:
        self.faults[url_path] = Fault(at, "stall")
        return self.faults[url_path]

    def gets(self, url_path: str) -> list[dict]:
        """The GET requests of one path, in order."""
        with self._lock:
            return [r for r in self.requests if r["method"] == "GET" and r["path"] == url_path]

    # -- the server -----------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        # A handler class per stub: the server builds a handler per request and gives it no
        # other way to reach the stub's content.
        return type("Handler", (StubHandler,), {"stub": self})


class StubHandler(BaseHTTPRequestHandler):
    """Answers as the Hugging Face hub and a file host do (see HubStub)."""

    stub: HubStub
    protocol_version = "HTTP/1.1"
    repo_type = "model"  # of the request being answered: a path under /datasets/ asks a dataset

    def log_message(self, *args: object) -> None:
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _authorised(self) -> bool:
        return (
            self.stub.token is not None
            and self.headers.get("Authorization") == f"Bearer {self.stub.token}"
        )

    def _error(self, status: int, code: str, message: str) -> None:
        payload = json.dumps({"error": message}).encode()
        self.send_response(status)
        self.send_header("X-Error-Code", code)
        self.send_header("X-Error-Message", message)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(payload)

    def _serve(self, body: bool) -> None:
        path = urlsplit(self.path).path
        with self.stub._lock:
            self.stub.requests.append({"method": self.command, "path": path,
                                  "range": self.headers.get("Range"),
                                  "authorised": self._authorised(),
                                  "auth_header": self.headers.get("Authorization") is not None,
                                  "authorization": self.headers.get("Authorization")})  # fmt: skip
        if path in self.stub.redirects:
            return self._redirect(self.stub.redirects[path])
        m = re.fullmatch(r"/api/(models|datasets)/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if m:
            self.repo_type = m.group(1)[:-1]
            return self._api(unquote(m.group(2)), unquote(m.group(3) or "main"))
        m = re.fullmatch(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            self.repo_type = "dataset" if m.group(1) else "model"
            return self._resolve(
                unquote(m.group(2)), unquote(m.group(3)), unquote(m.group(4)), path, body
            )
        name = path[len("/files/") :]
        if path.startswith("/files/") and name in self.stub.files:
            kind = self.stub.content_types.get(name)
            return self._content(
                self.stub.files[name], path, {"Content-Type": kind} if kind else {}, body
            )
        return self._error(404, "EntryNotFound", f"{path} not found")

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _repo(self, repo_id: str, rev: str) -> StubRepo | None:
        repo = self.stub.repos.get(repo_id)
        if repo is None or repo.repo_type != self.repo_type:
            self._error(401, "RepoNotFound", "Repository not found")
            return None
        if repo.gated and not self._authorised():
            self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have "
                        "access to it and be authenticated to access it. Please log in.")  # fmt: skip
            return None
        if rev not in ("main", repo.sha):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
            return None
        return repo

    def _api(self, repo_id: str, rev: str) -> None:
        repo = self._repo(repo_id, rev)
        if repo is None:
            return
        payload = json.dumps(repo.info()).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command == "GET":
            self.wfile.write(payload)

    def _resolve(self, repo_id: str, rev: str, name: str, path: str, body: bool) -> None:
        repo = self._repo(repo_id, rev)
        if repo is None:
            return
        f = repo.files.get(name)
        if f is None:
            return self._error(404, "EntryNotFound", f"{name} not found in {repo_id}")
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{git_blob_id(f.data)}"'}
        if f.lfs:
            headers.update({"X-Linked-Etag": f'"{f.etag}"', "X-Linked-Size": str(len(f.data))})
        self._content(f.data, path, headers, body)

    def _content(self, data: bytes, path: str, headers: dict[str, str], body: bool) -> None:
        start, status = 0, 200
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if m:
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        end = int(m.group(2)) + 1 if m and m.group(2) else len(data)
        chunk = data[start:end]
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(chunk)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
        self.end_headers()
        if not body:
            return
        fault = self.stub.faults.get(path)
        if fault is not None and fault.times > 0 and start < fault.at:
            fault.times -= 1
            try:
                self.wfile.write(chunk[: fault.at - start])
                self.wfile.flush()
            except OSError:
                pass
            fault.reached.set()
            if fault.kind == "stall":
                fault.released.wait(120)
            self.close_connection = True
            return
        try:
            self.wfile.write(chunk)
        except OSError:
            self.close_connection = True
