"""A local OpenAI-compatible chat server, started by tests, standing in for vLLM or Ollama.

It answers `/v1/chat/completions` from a script the test sets: a rewritten prompt, a shot
plan, an error or a delay; and records every request it received."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.waiting import pause


@dataclass
class Script:
    reply: str = "EXTENDED: a detailed scene"
    plan_reply: str = '{"subject": "A red fox in a brown trench coat.", "shots": %s}'
    status: int = 200
    delay: float = 0.0
    # When set, every request waits for it before answering: the test knows the task is
    # inside prompt extension for as long as it likes, whatever the machine's speed.
    hold: threading.Event | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


class _Handler(BaseHTTPRequestHandler):
    script: Script

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.script.requests.append(body)
        self.script.headers.append(dict(self.headers))
        pause(self.script.delay)  # a slow model
        if self.script.hold is not None:
            self.script.hold.wait()
        system = body["messages"][0]["content"]
        if "JSON" in system:  # a shot plan: answer with as many shots as asked for
            match = re.search(r"exactly (\d+)|恰好(\d+)", system)
            count = int(next(g for g in match.groups() if g)) if match else 2
            shots = json.dumps([f"Shot {i + 1}: the fox acts." for i in range(count)])
            reply = self.script.plan_reply
            content = reply % shots if "%s" in reply else reply
        else:
            content = self.script.reply
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
        self.send_response(self.script.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload.encode())


@contextmanager
def llm_server(script: Script) -> Iterator[str]:
    """Serve `script`; yields the base URL (…/v1)."""
    handler = type("Handler", (_Handler,), {"script": script})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
