"""A small in-memory Hugging Face Hub for tests, so the real ``huggingface_hub`` client code runs.

The Hub cannot be reached from CI, and a mocked client would test the mock. This server speaks
the subset of the Hub HTTP API that ``create_repo``, ``upload_folder``, ``snapshot_download``,
``push_to_hub`` and ``from_pretrained`` use, stores git-like commits (every commit is a new sha
pointing at a full snapshot of the files), and lets a test inject failures (5xx answers, dropped
connections, a required token) and read back every request it received.

Use the ``hub`` fixture (``from tests.hub_server import hub``, or add it to ``conftest.py``): it
starts a server, points ``huggingface_hub`` and ``transformers`` at it and turns offline mode off
for the duration of one test.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

USER = "user"
TOKEN = "hf_testtokenABCDEFGHIJKLMNOPQRSTUVWXYZ"
_GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
_KINDS = {"models": "model", "datasets": "dataset", "spaces": "space"}


def git_blob_sha(content: bytes) -> str:
    """The git object id of a blob, which is what the Hub reports as a regular file's oid."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Commit:
    sha: str
    parent: str | None
    message: str
    files: dict[str, bytes]


@dataclass
class Repo:
    repo_id: str
    repo_type: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        if _SHA_RE.match(revision):
            return self.commits.get(revision)
        return None

    def history(self, branch: str = "main") -> list[Commit]:
        """Commits reachable from ``branch``, newest first."""
        out, sha = [], self.branches.get(branch)
        while sha is not None:
            out.append(self.commits[sha])
            sha = self.commits[sha].parent
        return out


@dataclass
class Request:
    """One request as received (header names lower-cased); ``status`` is None for a dropped connection."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int | None = None


class _Reply(Exception):
    """Raised inside a route to answer with an error status (and the Hub's error headers)."""

    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


class HubServer:
    """The Hub's state plus a threaded HTTP server on 127.0.0.1 at a free port."""

    def __init__(self) -> None:
        self.repos: dict[tuple[str, str], Repo] = {}
        self.requests: list[Request] = []
        self._lock = threading.RLock()
        self._counter = 0
        self._token: str | None = None
        self._failures: list[tuple[frozenset[str], int | None]] = []
        self._holds: dict[str, threading.Event] = {}
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="hub-server", daemon=True)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        for event in self._holds.values():
            event.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    # ------------------------------------------------------------------ test controls
    def require_token(self, token: str | None) -> None:
        """Answer 401 to every request that does not carry ``Bearer <token>`` (None: accept all)."""
        self._token = token

    def fail_next(self, n: int, status: int | None = 500, routes: tuple[str, ...] = ("commit", "preupload")) -> None:
        """The next ``n`` requests to ``routes`` fail: ``status``, or a dropped connection if None.

        Route names: create, branch, preupload, commit, info, tree, resolve, validate-yaml, whoami.
        """
        with self._lock:
            self._failures.extend([(frozenset(routes), status)] * n)

    def hold(self, route: str = "commit") -> threading.Event:
        """Requests to ``route`` wait until the returned event is set (to test queued pushes)."""
        event = threading.Event()
        self._holds[route] = event
        return event

    def create_repo(self, repo_id: str, repo_type: str = "model", private: bool = False) -> Repo:
        """Create a repo directly (as if someone else had), with the initial ``.gitattributes`` commit."""
        with self._lock:
            repo = Repo(repo_id, repo_type, private)
            self.repos[(repo_type, repo_id)] = repo
            self._commit(repo, "main", "initial commit", {".gitattributes": _GITATTRIBUTES})
            return repo

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """The files of ``repo_id`` at ``revision`` (a copy)."""
        with self._lock:
            commit = self.repo(repo_id, repo_type).resolve(revision)
            if commit is None:
                raise KeyError(revision)
            return dict(commit.files)

    def requests_to(self, route_fragment: str) -> list[Request]:
        return [r for r in self.requests if route_fragment in r.path]

    # ------------------------------------------------------------------ internals
    def _commit(self, repo: Repo, branch: str, message: str, files: dict[str, bytes]) -> Commit:
        self._counter += 1
        parent = repo.branches.get(branch)
        digest = hashlib.sha1(f"{repo.repo_id}\0{parent}\0{message}\0{self._counter}".encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + git_blob_sha(files[path]).encode())
        commit = Commit(digest.hexdigest(), parent, message, files)
        repo.commits[commit.sha] = commit
        repo.branches[branch] = commit.sha
        return commit

    def _take_failure(self, route: str) -> tuple[bool, int | None]:
        with self._lock:
            for i, (routes, status) in enumerate(self._failures):
                if route in routes:
                    del self._failures[i]
                    return True, status
        return False, None


def _make_handler(server: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
            pass

        def do_GET(self):
            self._handle()

        def do_HEAD(self):
            self._handle()

        def do_POST(self):
            self._handle()

        def do_DELETE(self):
            self._handle()

        # -------------------------------------------------------------- plumbing
        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> None:
            self._record.status = status  # before answering: the client may look at it right after
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            if "Content-Length" not in (headers or {}):
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
            self._send(status, json.dumps(payload).encode(), headers)

        def _handle(self) -> None:
            body = self._read_body()
            self._record = Request(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            with server._lock:
                server.requests.append(self._record)
            split = urlsplit(self.path)
            self._query = {k: v[-1] for k, v in parse_qs(split.query).items()}
            segments = [unquote(s) for s in split.path.strip("/").split("/")]
            try:
                route, handler, args = self._route(segments)
                event = server._holds.get(route)
                if event is not None:
                    event.wait(timeout=30)
                failed, status = server._take_failure(route)
                if failed:
                    if status is None:  # a dropped connection: no answer at all
                        self.close_connection = True
                        self.connection.shutdown(2)
                        return
                    raise _Reply(status, f"injected failure on {route}")
                self._check_token()
                handler(body, *args)
            except _Reply as reply:
                headers = {"X-Error-Message": reply.message}
                if reply.code:
                    headers["X-Error-Code"] = reply.code
                self._json(reply.status, {"error": reply.message, **reply.extra}, headers)

        def _check_token(self) -> None:
            if server._token is None:
                return
            if self.headers.get("Authorization") != f"Bearer {server._token}":
                raise _Reply(401, "Invalid credentials in Authorization header")

        def _route(self, s: list[str]):
            method = self.command
            if s[:2] == ["api", "whoami-v2"]:
                return "whoami", self._whoami, ()
            if s[:3] == ["api", "repos", "create"] and method == "POST":
                return "create", self._create, ()
            if s[:2] == ["api", "validate-yaml"] and method == "POST":
                return "validate-yaml", lambda body: self._json(200, {"errors": [], "warnings": []}), ()
            if len(s) >= 4 and s[0] == "api" and s[1] in _KINDS:
                repo_type, repo_id, rest = _KINDS[s[1]], f"{s[2]}/{s[3]}", s[4:]
                if not rest and method == "GET":
                    return "info", self._info, (repo_type, repo_id, "main")
                if len(rest) == 2 and rest[0] == "revision" and method == "GET":
                    return "info", self._info, (repo_type, repo_id, rest[1])
                if len(rest) >= 2 and rest[0] == "tree" and method == "GET":
                    return "tree", self._tree, (repo_type, repo_id, rest[1], "/".join(rest[2:]))
                if len(rest) == 2 and rest[0] == "preupload" and method == "POST":
                    return "preupload", self._preupload, (repo_type, repo_id, rest[1])
                if len(rest) == 2 and rest[0] == "commit" and method == "POST":
                    return "commit", self._commit, (repo_type, repo_id, rest[1])
                if len(rest) >= 2 and rest[0] == "branch" and method == "POST":
                    return "branch", self._branch, (repo_type, repo_id, "/".join(rest[1:]))
            kind = "model"
            if s and s[0] in ("datasets", "spaces"):
                kind, s = _KINDS[s[0]], s[1:]
            if len(s) >= 5 and s[2] == "resolve" and method in ("GET", "HEAD"):
                return "resolve", self._resolve, (kind, f"{s[0]}/{s[1]}", s[3], "/".join(s[4:]))
            raise _Reply(404, f"no route for {method} {self.path}")

        # -------------------------------------------------------------- lookups
        def _repo(self, repo_type: str, repo_id: str) -> Repo:
            repo = server.repos.get((repo_type, repo_id))
            if repo is None:
                raise _Reply(404, f"Repository {repo_id} not found", "RepoNotFound")
            return repo

        def _revision(self, repo: Repo, revision: str) -> Commit:
            commit = repo.resolve(revision)
            if commit is None:
                raise _Reply(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            return commit

        # -------------------------------------------------------------- routes
        def _whoami(self, body: bytes) -> None:
            self._json(200, {"type": "user", "name": USER, "fullname": "Test User", "orgs": [],
                             "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}})

        def _create(self, body: bytes) -> None:
            payload = json.loads(body or b"{}")
            repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
            repo_type = payload.get("type") or "model"
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            url = f"{server.url}/{prefix}{repo_id}"
            with server._lock:
                if (repo_type, repo_id) in server.repos:  # the Hub still tells where the repo is
                    raise _Reply(409, f"You already created this {repo_type} repo", extra={"url": url})
                server.create_repo(repo_id, repo_type, private=payload.get("visibility") == "private"
                                   or bool(payload.get("private")))
            self._json(200, {"url": url, "name": repo_id})

        def _info(self, body: bytes, repo_type: str, repo_id: str, revision: str) -> None:
            with server._lock:
                repo = self._repo(repo_type, repo_id)
                commit = self._revision(repo, revision)
                siblings = [{"rfilename": p} for p in sorted(commit.files)]
            self._json(200, {"id": repo_id, "modelId": repo_id, "sha": commit.sha, "private": repo.private,
                             "siblings": siblings, "tags": []})

        def _tree(self, body: bytes, repo_type: str, repo_id: str, revision: str, path: str) -> None:
            recursive = self._query.get("recursive", "").lower() in ("1", "true")
            with server._lock:
                commit = self._revision(self._repo(repo_type, repo_id), revision)
                files = dict(commit.files)
            prefix = f"{path.strip('/')}/" if path.strip("/") else ""
            if prefix and prefix[:-1] in files:
                raise _Reply(400, f"{path} is a file, not a folder")
            entries: dict[str, dict] = {}
            for name, content in sorted(files.items()):
                if not name.startswith(prefix):
                    continue
                parts = name[len(prefix):].split("/")
                for depth in range(1, len(parts)):  # the folders on the way
                    if not recursive and depth > 1:
                        break
                    folder = prefix + "/".join(parts[:depth])
                    entries.setdefault(folder, {"type": "directory", "path": folder,
                                                "oid": hashlib.sha1(folder.encode()).hexdigest()})
                if recursive or len(parts) == 1:
                    entries[name] = {"type": "file", "path": name, "size": len(content),
                                     "oid": git_blob_sha(content)}
            if prefix and not entries:
                raise _Reply(404, f"{path} does not exist at {revision}", "EntryNotFound")
            self._json(200, list(entries.values()))

        def _preupload(self, body: bytes, repo_type: str, repo_id: str, revision: str) -> None:
            payload = json.loads(body)
            with server._lock:
                files = self._revision(self._repo(repo_type, repo_id), revision).files
                answer = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                           "oid": git_blob_sha(files[f["path"]]) if f["path"] in files else None}
                          for f in payload["files"]]
            self._json(200, {"files": answer, "commitOid": None})

        def _commit(self, body: bytes, repo_type: str, repo_id: str, revision: str) -> None:
            lines = [json.loads(line) for line in body.splitlines() if line.strip()]
            if not lines or lines[0].get("key") != "header":
                raise _Reply(400, "commit body must start with a header line")
            header = lines[0]["value"]
            with server._lock:
                repo = self._repo(repo_type, repo_id)
                if revision not in repo.branches:
                    raise _Reply(404, f"Invalid rev id: {revision}", "RevisionNotFound")
                head = repo.commits[repo.branches[revision]]
                parent = header.get("parentCommit")
                if parent is not None and not head.sha.startswith(parent):
                    raise _Reply(412, f"A commit has happened since {parent}: {revision} is at {head.sha}")
                files = dict(head.files)
                for line in lines[1:]:
                    key, value = line.get("key"), line.get("value", {})
                    if key == "file":
                        if value.get("encoding") != "base64":
                            raise _Reply(400, f"unsupported encoding for {value.get('path')}")
                        files[value["path"]] = base64.b64decode(value["content"])
                    elif key == "deletedFile":
                        if files.pop(value["path"], None) is None:
                            raise _Reply(404, f"A file with this name doesn't exist: {value['path']}")
                    elif key == "deletedFolder":
                        folder = value["path"].rstrip("/") + "/"
                        for name in [n for n in files if n.startswith(folder)]:
                            del files[name]
                    else:
                        raise _Reply(400, f"unsupported commit operation {key!r} (this test Hub takes regular files)")
                commit = server._commit(repo, revision, header.get("summary", ""), files)
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            self._json(200, {"success": True, "commitOid": commit.sha, "hookOutput": "",
                             "commitUrl": f"{server.url}/{prefix}{repo_id}/commit/{commit.sha}"})

        def _branch(self, body: bytes, repo_type: str, repo_id: str, branch: str) -> None:
            payload = json.loads(body or b"{}")
            with server._lock:
                repo = self._repo(repo_type, repo_id)
                if branch in repo.branches:
                    raise _Reply(409, f"Reference already exists: {branch}")
                start = self._revision(repo, payload.get("startingPoint") or "main")
                repo.branches[branch] = start.sha
            self._json(200, {})

        def _resolve(self, body: bytes, repo_type: str, repo_id: str, revision: str, path: str) -> None:
            with server._lock:
                commit = self._revision(self._repo(repo_type, repo_id), revision)
                content = commit.files.get(path)
            if content is None:
                raise _Reply(404, f"Entry not found: {path}", "EntryNotFound")
            headers = {"X-Repo-Commit": commit.sha, "ETag": f'"{git_blob_sha(content)}"',
                       "Accept-Ranges": "bytes"}
            status, start = 200, 0
            match = re.match(r"bytes=(\d+)-$", self.headers.get("Range", ""))
            if match and self.command == "GET":
                start, status = int(match.group(1)), 206
                headers["Content-Range"] = f"bytes {start}-{len(content) - 1}/{len(content)}"
            self._send(status, content[start:], headers, content_type="application/octet-stream")

    return Handler


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A running test Hub, with the real ``huggingface_hub``/``transformers`` clients pointed at it.

    ``huggingface_hub`` copies ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and the cache paths into
    ``huggingface_hub.constants`` at import time, and the module-level ``HfApi`` (behind
    ``huggingface_hub.create_repo`` & co.) and transformers' shared ``HfApi`` keep the endpoint they
    were built with; so the fixture sets the environment *and* those copies, and restores all of it.
    """
    from huggingface_hub import constants, hf_api

    server = HubServer().start()
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_OIDC_RESOURCE", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    cache = tmp_path / "hf_home"
    monkeypatch.setattr(constants, "ENDPOINT", server.url)
    template = server.url + "/{repo_id}/resolve/{revision}/{filename}"
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
    monkeypatch.setattr(constants, "HF_URL_HOSTS", constants.HF_URL_HOSTS | {"127.0.0.1"})
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache / "hub"))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(cache / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(cache / "stored_tokens"))
    monkeypatch.setattr(hf_api.api, "endpoint", server.url)
    try:
        import transformers.utils.hub as tf_hub
    except ImportError:  # pragma: no cover - transformers is a dependency
        tf_hub = None
    if tf_hub is not None:
        monkeypatch.setattr(tf_hub, "_hf_api", None)  # rebuilt lazily against the patched endpoint
    try:
        yield server
    finally:
        server.stop()
