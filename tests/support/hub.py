"""A local Hugging Face Hub for tests: the subset of the Hub API that huggingface_hub's
`model_info`, `list_repo_tree` and `hf_hub_download` use, over real HTTP on 127.0.0.1:0.

Repos are `{path: bytes}` made by the test. Files at least `LFS_MIN` bytes long are served as
LFS files (sha256 ETag, `X-Linked-*` headers), the others as git files (git blob sha1 ETag),
as the real Hub does. Faults are set per file: `drop_after` (close the connection after that
many bytes, once: huggingface_hub resumes with a Range request), `corrupt` (serve other bytes
of the same length), and `gate` (pause mid-file until the test sets the event). Every request
is recorded for assertions.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_MIN = 1024
_RESOLVE = re.compile(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)")
_INFO = re.compile(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?")
_TREE = re.compile(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)")


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str = "c" * 40
    refs: dict[str, str] = field(default_factory=dict)  # extra branch/tag names

    def resolve(self, revision: str) -> str | None:
        if revision in (self.commit, "main") or self.refs.get(revision) == self.commit:
            return self.commit
        return None


@dataclass
class Faults:
    drop_after: int | None = None
    corrupt: bool = False
    gate: threading.Event | None = None
    gate_at: int = 0  # bytes sent before waiting on the gate
    reached: threading.Event = field(default_factory=threading.Event)  # the gate is reached


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    range: str | None
    authorization: str | None


class Hub:
    """The repos, the faults and the request log, shared with the handler threads."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.faults: dict[tuple[str, str], Faults] = {}
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.url = ""

    def add(self, repo_id: str, files: Mapping[str, bytes], commit: str = "c" * 40) -> Repo:
        repo = Repo(files=dict(files), commit=commit)
        self.repos[repo_id] = repo
        return repo

    def fault(self, repo_id: str, path: str) -> Faults:
        return self.faults.setdefault((repo_id, path), Faults())

    def requests(self, method: str | None = None, contains: str = "") -> list[Seen]:
        with self.lock:
            return [
                s
                for s in self.seen
                if (method is None or s.method == method) and contains in s.path
            ]


def _tree_entry(path: str, data: bytes) -> dict[str, object]:
    entry: dict[str, object] = {
        "type": "file",
        "oid": git_sha1(data),
        "size": len(data),
        "path": path,
    }
    if len(data) >= LFS_MIN:
        entry["lfs"] = {
            "oid": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "pointerSize": 134,
        }
    return entry


def _handler(hub: Hub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            return

        def _record(self) -> str:
            path = unquote(urlsplit(self.path).path)
            with hub.lock:
                hub.seen.append(
                    Seen(
                        self.command,
                        path,
                        self.headers.get("Range"),
                        self.headers.get("Authorization"),
                    )
                )
            return path

        def _json(self, status: int, body: object, headers: Mapping[str, str] = {}) -> None:
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(raw)

        def _missing(self, code: str) -> None:
            self._json(404, {"error": code}, {"X-Error-Code": code})

        def do_GET(self) -> None:
            self._serve()

        def do_HEAD(self) -> None:
            self._serve()

        def _serve(self) -> None:
            path = self._record()
            for pattern, handler in (
                (_INFO, self._info),
                (_TREE, self._tree),
                (_RESOLVE, self._file),
            ):
                match = pattern.fullmatch(path)
                if match:
                    handler(*match.groups())
                    return
            self._json(404, {"error": "no such route"})

        def _repo(self, repo_id: str, revision: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._missing("RepoNotFound")
                return None
            if repo.resolve(revision) is None:
                self._missing("RevisionNotFound")
                return None
            return repo

        def _info(self, repo_id: str, revision: str | None) -> None:
            repo = self._repo(repo_id, revision or "main")
            if repo is not None:
                siblings = [{"rfilename": p} for p in sorted(repo.files)]
                self._json(200, {"id": repo_id, "sha": repo.commit, "siblings": siblings})

        def _tree(self, repo_id: str, revision: str) -> None:
            repo = self._repo(repo_id, revision)
            if repo is not None:
                self._json(200, [_tree_entry(p, repo.files[p]) for p in sorted(repo.files)])

        def _file(self, repo_id: str, revision: str, name: str) -> None:
            repo = self._repo(repo_id, revision)
            if repo is None:
                return
            data = repo.files.get(name)
            commit = {"X-Repo-Commit": repo.commit}
            if data is None:
                self._json(
                    404, {"error": "EntryNotFound"}, {**commit, "X-Error-Code": "EntryNotFound"}
                )
                return
            faults = hub.faults.get((repo_id, name), Faults())
            body = bytes(b ^ 0xFF for b in data) if faults.corrupt else data
            start = 0
            wanted = self.headers.get("Range")
            if wanted and self.command == "GET":
                start = int(wanted.removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            else:
                self.send_response(200)
            self.send_header("X-Repo-Commit", repo.commit)
            self.send_header("Content-Length", str(len(data) - start))
            if len(data) >= LFS_MIN:
                sha256 = hashlib.sha256(data).hexdigest()
                self.send_header("ETag", f'"{git_sha1(data)}"')
                self.send_header("X-Linked-Etag", f'"{sha256}"')
                self.send_header("X-Linked-Size", str(len(data)))
            else:
                self.send_header("ETag", f'"{git_sha1(data)}"')
            self.end_headers()
            if self.command == "HEAD":
                return
            self._body(body, start, faults)

        def _body(self, body: bytes, start: int, faults: Faults) -> None:
            position = start
            if faults.gate is not None and position < faults.gate_at:
                self.wfile.write(body[position : faults.gate_at])
                self.wfile.flush()
                position = faults.gate_at
                faults.reached.set()
                faults.gate.wait(60)
            if faults.drop_after is not None and position < faults.drop_after:
                cut = faults.drop_after
                faults.drop_after = None  # once
                self.wfile.write(body[position:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body[position:])

    return Handler


@contextmanager
def serving(hub: Hub | None = None) -> Iterator[Hub]:
    """Serve `hub` (a new one by default) on a free port for the life of the block."""
    hub = hub or Hub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, args=(0.05,), name="test-hub", daemon=True
    )
    thread.start()
    try:
        yield hub
    finally:
        for faults in hub.faults.values():
            if faults.gate is not None:
                faults.gate.set()
        server.shutdown()
        server.server_close()
        thread.join(10)


def unreachable_url() -> str:
    """An http URL on 127.0.0.1 where nothing listens (a Hub that cannot be reached)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"
