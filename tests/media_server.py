"""A local HTTP server with well- and ill-behaved endpoints, for the guarded fetcher."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.waiting import pause

ROUTES: dict[str, tuple[int, dict[str, str], bytes]] = {}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path == "/slow":  # a byte every 0.3 s, forever (until the client gives up)
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                for _ in range(200):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    pause(0.3)
            except OSError:
                pass
            return
        if path == "/hang":  # headers never come
            pause(5)
            return
        if path == "/stream-big":  # no Content-Length, more bytes than any cap
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
            return
        status, headers, body = ROUTES.get(path, (404, {"Content-Type": "text/plain"}, b"nope"))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@contextmanager
def media_server(routes: dict[str, tuple[int, dict[str, str], bytes]]) -> Iterator[int]:
    """Serve `routes` on 127.0.0.1; yields the port."""
    ROUTES.clear()
    ROUTES.update(routes)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
