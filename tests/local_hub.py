"""An imitation of the Hugging Face hub's file endpoint on 127.0.0.1, for download tests without the network.

It answers HEAD and GET on `/{owner}/{name}/resolve/{revision}/{filename}` with the headers
huggingface_hub reads (X-Repo-Commit, X-Linked-Etag / ETag, X-Linked-Size), as the hub does for a
large (LFS) file, whose etag is the sha256 of its bytes. Point huggingface_hub at it with
HF_ENDPOINT=hub.url in a fresh process, or `hub.patch(monkeypatch, cache)` in this one.
"""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


class LocalHub:
    """Files served at `url`; `requests` records each (method, path) the server answered."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, bytes]] = {}
        self.requests: list[tuple[str, str]] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, repo: str, filename: str, content: bytes, served: bytes | None = None) -> None:
        """Serve `content` as `repo`'s `filename`; `served`, if given, is what GET sends instead (a
        corrupted download), while the listed sha256 and size stay those of `content`."""
        self.files[f"/{repo}/resolve/main/{filename}"] = (content, content if served is None else served)

    def downloads(self) -> int:
        """How many files were sent (huggingface_hub also asks other endpoints, answered 404)."""
        return sum(method == "GET" and "/resolve/" in path for method, path in self.requests)

    def __enter__(self) -> LocalHub:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def patch(self, monkeypatch, cache) -> None:
        """Point this process's huggingface_hub at the server, online, with its cache in `cache`."""
        from huggingface_hub import constants

        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("EVOLVER_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(constants, "ENDPOINT", self.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            self.url + "/{repo_id}/resolve/{revision}/{filename}")

    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                if self.path not in hub.files:
                    self.send_response(404)
                    self.send_header("X-Error-Code", "EntryNotFound")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                content, served = hub.files[self.path]
                self.send_response(200)
                self.send_header("X-Repo-Commit", COMMIT)
                self.send_header("X-Linked-Etag", f'"{hashlib.sha256(content).hexdigest()}"')
                self.send_header("X-Linked-Size", str(len(content)))
                self.send_header("Content-Length", str(len(served)))
                self.end_headers()
                if body:
                    self.wfile.write(served)

        return Handler
