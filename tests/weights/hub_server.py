"""A local stand-in for the Hugging Face Hub's file endpoint, so huggingface_hub itself downloads and lays out
its cache in tests without network.

It answers ``HEAD`` / ``GET /{org}/{name}/resolve/{revision}/{filename}`` the way the Hub does for a plain (non
LFS-redirected, non-xet) file: ``X-Repo-Commit``, ``ETag`` and ``Content-Length`` headers, and the Hub's
``X-Error-Code`` (``RepoNotFound`` / ``RevisionNotFound`` / ``EntryNotFound``) on a 404, which huggingface_hub
turns into its typed errors.
"""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote


class FakeHub:
    """Serve ``repos``: ``{repo_id: {"refs": {branch: commit}, commit: {filename: bytes}}}`` on 127.0.0.1."""

    def __init__(self, repos: dict[str, dict]) -> None:
        self.repos = repos
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # noqa: ANN002 - quiet
                pass

            def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
                self._answer(body=False)

            def do_GET(self) -> None:  # noqa: N802
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                hub.requests.append(f"{self.command} {self.path}")
                parts = unquote(self.path.split("?")[0]).lstrip("/").split("/")
                if len(parts) < 5 or parts[2] != "resolve":
                    return self._error(404, "RepoNotFound")
                repo, rev, filename = "/".join(parts[:2]), parts[3], "/".join(parts[4:])
                if repo not in hub.repos:
                    return self._error(404, "RepoNotFound")
                entry = hub.repos[repo]
                commit = entry["refs"].get(rev, rev)
                if commit not in entry:
                    return self._error(404, "RevisionNotFound")
                if filename not in entry[commit]:
                    return self._error(404, "EntryNotFound", commit)
                data = entry[commit][filename]
                self.send_response(200)
                self.send_header("X-Repo-Commit", commit)
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if body:
                    self.wfile.write(data)

            def _error(self, status: int, code: str, commit: str | None = None) -> None:
                self.send_response(status)
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", code)
                if commit:
                    self.send_header("X-Repo-Commit", commit)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def repo_from_folder(folder: Path, commit: str = "a" * 40) -> dict:
    """A one-commit repository holding every file of ``folder`` (e.g. a ``save_pretrained`` output)."""
    return {"refs": {"main": commit}, commit: {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}}
