"""A webhook receiver on loopback for tests: it records every POST, checks its Standard Webhooks
signature with the `standardwebhooks` package (the reference verifier, not our code), and
answers statuses from a script."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from standardwebhooks import Webhook, WebhookVerificationError

from tests.waiting import scaled


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: bytes
    verified: bool  # the signature checked out with the receiver's secret
    answered: int

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    port: int
    secret: str | None = None  # set once the key is known; unverifiable posts are recorded too
    script: list[int] = field(default_factory=lambda: [200])  # answers, the last one repeats
    received: list[Received] = field(default_factory=list)
    arrived: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait_for(
        self, check: Callable[[Sequence[Received]], bool], *, timeout: float = scaled(60)
    ) -> list[Received]:
        """Wait until `check(received)` holds; `timeout` (already scaled) is a hang guard."""
        with self.arrived:
            if not self.arrived.wait_for(lambda: check(self.received), timeout=timeout):
                raise AssertionError(f"webhooks received: {self.received}")
            return list(self.received)

    def answer(self, headers: dict[str, str], body: bytes) -> int:
        verified = False
        if self.secret is not None:
            try:
                Webhook(self.secret).verify(body, headers)
                verified = True
            except WebhookVerificationError:
                verified = False
        with self.arrived:
            status = self.script[min(len(self.received), len(self.script) - 1)]
            self.received.append(Received(headers, body, verified, status))
            self.arrived.notify_all()
        return status


@contextmanager
def webhook_receiver(script: Sequence[int] = (200,)) -> Iterator[Receiver]:
    holder: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = holder[0].answer(headers, body)
            payload = b"nope" if status >= 300 else b"ok"
            self.send_response(status)
            if 300 <= status < 400:
                self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Receiver(port=server.server_address[1], script=list(script)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        server.shutdown()
        server.server_close()
