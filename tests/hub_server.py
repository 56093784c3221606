"""A local stand-in for the Hugging Face Hub HTTP API, serving one dataset repo from a folder.

It answers what ``huggingface_hub.snapshot_download`` (2.x) asks for, the way the real Hub answers:

- ``GET /api/datasets/{repo}/revision/{rev}``: repo info with the commit ``sha`` and ``siblings``;
- ``GET /api/datasets/{repo}/tree/{rev}[/{path}]``: the recursive file listing, paginated with a ``Link``
  header (``oid`` = git blob sha1; ``lfs`` for large files);
- ``HEAD|GET /datasets/{repo}/resolve/{rev}/{path}``: small files directly (``ETag`` = blob sha1), large
  ("LFS") files as a 302 to a CDN origin (a second port, so the client treats it as another host) with
  ``X-Linked-Etag`` / ``X-Linked-Size``; always ``X-Repo-Commit``;
- ``GET /cdn/{sha256}`` on the CDN origin: the bytes (``Range: bytes=N-`` honoured).

Errors carry ``X-Error-Code`` as the Hub's do: RevisionNotFound (404), RepoNotFound (401), GatedRepo (401),
EntryNotFound (404). Every request is recorded, so a test can assert that offline mode made none.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit


@dataclass(frozen=True)
class RepoFile:
    path: str
    data: bytes
    blob_id: str  # git blob sha1
    sha256: str
    lfs: bool


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def load_repo_files(folder: Path, *, lfs_threshold: int = 10_000) -> dict[str, RepoFile]:
    """Every file under ``folder`` (plus a .gitattributes, as a real repo has), keyed by repo path."""
    files: dict[str, bytes] = {".gitattributes": b"*.tsv filter=lfs diff=lfs merge=lfs -text\n"}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return {
        p: RepoFile(p, d, _git_blob_sha1(d), hashlib.sha256(d).hexdigest(), len(d) > lfs_threshold)
        for p, d in files.items()
    }


_ROUTES = (
    ("info", re.compile(r"^/api/datasets/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)$")),
    ("tree", re.compile(r"^/api/datasets/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$")),
    ("resolve", re.compile(r"^/datasets/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")),
    ("cdn", re.compile(r"^/cdn/(?P<oid>[0-9a-f]{64})$")),
)


class HubServer:
    """One dataset repo at one commit; ``refs`` names that point to it (``main`` by default).

    ``token``: when set the repo is gated, and file downloads need ``Authorization: Bearer <token>``.
    ``faults``: path substring -> HTTP status to answer instead (e.g. ``{"/resolve/": 500}``).
    """

    def __init__(
        self,
        folder: Path,
        repo_id: str = "DolphinAI/u2-bench",
        *,
        refs: tuple[str, ...] = ("main",),
        token: str | None = None,
        page_size: int = 50,
    ) -> None:
        self.repo_id = repo_id
        self.files = load_repo_files(folder)
        listing = "".join(f"{f.path}\0{f.blob_id}\n" for f in self.files.values())
        self.sha = hashlib.sha1(listing.encode()).hexdigest()
        self.refs = {name: self.sha for name in refs} | {self.sha: self.sha}
        self.token = token
        self.page_size = page_size
        self.faults: dict[str, int] = {}
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._by_sha256 = {f.sha256: f for f in self.files.values()}
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self.url = ""
        self.cdn_url = ""

    # -- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> HubServer:
        for _ in range(2):  # the Hub, then its CDN on another port (another origin)
            server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
            server.daemon_threads = True
            # A short poll interval keeps shutdown() (and so each test's teardown) quick.
            thread = threading.Thread(target=server.serve_forever, args=(0.02,), name="hub-stand-in", daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        self.url = f"http://127.0.0.1:{self._servers[0].server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self._servers[1].server_address[1]}"
        return self

    def stop(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()
        for thread in self._threads:
            thread.join(timeout=5)
        self._servers.clear()
        self._threads.clear()

    @contextmanager
    def running(self) -> Iterator[HubServer]:
        self.start()
        try:
            yield self
        finally:
            self.stop()

    # -- bookkeeping -----------------------------------------------------------------------------------

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))

    def count(self, contains: str = "") -> int:
        """Requests so far whose path contains ``contains`` (all of them by default)."""
        with self._lock:
            return sum(1 for _, path in self.requests if contains in path)

    def paths(self) -> Counter[str]:
        with self._lock:
            return Counter(path for _, path in self.requests)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()


def _handler_for(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        pass

    Handler.hub = hub
    return Handler


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        """Silence the per-request stderr line."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._dispatch(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch(head=True)

    # -- routing ---------------------------------------------------------------------------------------

    def _dispatch(self, *, head: bool) -> None:
        parts = urlsplit(self.path)
        self.hub.record(self.command, parts.path)
        for needle, status in self.hub.faults.items():
            if needle in parts.path:
                return self._error(status, "Fault", f"injected {status}", head=head)
        for name, pattern in _ROUTES:
            match = pattern.match(parts.path)
            if match is None:
                continue
            groups = {k: unquote(v) if v is not None else None for k, v in match.groupdict().items()}
            if name == "cdn":
                return self._cdn(groups["oid"] or "", head=head)
            if groups["repo"] != self.hub.repo_id:
                return self._error(401, "RepoNotFound", "Repository not found", head=head)
            sha = self.hub.refs.get(groups["rev"] or "")
            if sha is None:
                return self._error(404, "RevisionNotFound", f"Invalid rev id: {groups['rev']}", head=head)
            if name == "info":
                return self._json(self._info(sha), head=head)
            if name == "tree":
                return self._tree(sha, groups.get("path") or "", parse_qs(parts.query), head=head)
            return self._resolve(sha, groups["path"] or "", head=head)
        return self._error(404, None, f"no route for {parts.path}", head=head)

    def _info(self, sha: str) -> dict[str, object]:
        return {
            "_id": "0" * 24,
            "id": self.hub.repo_id,
            "author": self.hub.repo_id.split("/")[0],
            "sha": sha,
            "private": False,
            "gated": "manual" if self.hub.token else False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "lastModified": "2025-05-23T00:00:00.000Z",
            "siblings": [{"rfilename": p} for p in self.hub.files],
        }

    def _tree(self, sha: str, prefix: str, query: dict[str, list[str]], *, head: bool) -> None:
        entries = self._tree_entries(prefix)
        start = int(query.get("cursor", ["0"])[0])
        page = entries[start : start + self.hub.page_size]
        headers = {}
        if start + self.hub.page_size < len(entries):
            base = f"{self.hub.url}/api/datasets/{self.hub.repo_id}/tree/{quote(sha, safe='')}"
            if prefix:
                base += "/" + quote(prefix, safe="")
            headers["Link"] = f'<{base}?recursive=True&expand=False&cursor={start + self.hub.page_size}>; rel="next"'
        self._json(page, head=head, headers=headers)

    def _tree_entries(self, prefix: str) -> list[dict[str, object]]:
        folders = sorted({p.rsplit("/", 1)[0] for p in self.hub.files if "/" in p})
        entries: list[dict[str, object]] = [
            {"type": "directory", "oid": hashlib.sha1(f.encode()).hexdigest(), "size": 0, "path": f} for f in folders
        ]
        for f in self.hub.files.values():
            entry: dict[str, object] = {"type": "file", "oid": f.blob_id, "size": len(f.data), "path": f.path}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}
            entries.append(entry)
        return [e for e in entries if not prefix or str(e["path"]).startswith(prefix.rstrip("/") + "/")]

    def _resolve(self, sha: str, path: str, *, head: bool) -> None:
        repo_headers = {"X-Repo-Commit": sha}
        file = self.hub.files.get(path)
        if file is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist", head=head, headers=repo_headers)
        if self.hub.token and self.headers.get("Authorization") != f"Bearer {self.hub.token}":
            message = f"Access to dataset {self.hub.repo_id} is restricted. You must have access to it."
            return self._error(401, "GatedRepo", message, head=head, headers=repo_headers)
        if not file.lfs:
            headers = repo_headers | {"ETag": f'"{file.blob_id}"', "Content-Type": "text/plain; charset=utf-8"}
            return self._send(200, file.data, head=head, headers=headers)
        headers = repo_headers | {
            "Location": f"{self.hub.cdn_url}/cdn/{file.sha256}",
            "X-Linked-Etag": f'"{file.sha256}"',
            "X-Linked-Size": str(len(file.data)),
            "ETag": f'"{file.blob_id}"',
        }
        return self._send(302, b"", head=head, headers=headers)

    def _cdn(self, oid: str, *, head: bool) -> None:
        file = self.hub._by_sha256.get(oid)
        if file is None:
            return self._error(404, None, "no such object", head=head)
        data, status, headers = file.data, 200, {"ETag": f'"{oid}"', "Content-Type": "application/octet-stream"}
        ranged = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if ranged and 0 < int(ranged.group(1)) < len(data):
            first = int(ranged.group(1))
            headers["Content-Range"] = f"bytes {first}-{len(data) - 1}/{len(data)}"
            data, status = data[first:], 206
        return self._send(status, data, head=head, headers=headers)

    # -- responses -------------------------------------------------------------------------------------

    def _json(self, body: object, *, head: bool, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(body).encode()
        self._send(200, payload, head=head, headers={"Content-Type": "application/json"} | (headers or {}))

    def _error(
        self, status: int, code: str | None, message: str, *, head: bool, headers: dict[str, str] | None = None
    ) -> None:
        extra = dict(headers or {})
        if code is not None:
            extra |= {"X-Error-Code": code, "X-Error-Message": message}
        payload = json.dumps({"error": message}).encode()
        self._send(status, payload, head=head, headers={"Content-Type": "application/json"} | extra)

    def _send(self, status: int, body: bytes, *, head: bool, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)
