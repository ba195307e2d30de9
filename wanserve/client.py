"""A client of a remote wanserve (or DashScope-compatible) server over its HTTP API: what
`wanserve generate --server` drives. Wire names stay in `wanserve.client_wire` (the client's
side of DashScope's format; nothing of the server is imported); this module moves bytes and
reads Server-Sent Events.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from wanserve import client_wire as wire
from wanserve.request import SynthesisRequest
from wanserve.tasks.models import TaskError, TaskOutcome

CREATE_PATH = "/api/v1/services/aigc/video-generation/video-synthesis"
# Generous: a create may store inline inputs, a download may be a long video.
TIMEOUT = httpx.Timeout(60.0, connect=10.0)
# Far above the keep-alive interval (15 s at most), so a silent stream means a dead one.
STREAM_READ_TIMEOUT = 60.0


class Refused(Exception):
    """The server answered with an error body (or not at all, as `HTTP<status>`)."""

    def __init__(self, error: TaskError, *, status: int) -> None:
        super().__init__(f"{error.code}: {error.message}")
        self.error = error
        self.status = status


@dataclass(frozen=True)
class StreamEvent:
    kind: str
    id: str | None
    data: dict[str, Any]


class RemoteServer:
    def __init__(self, base_url: str, *, api_key: str) -> None:
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=TIMEOUT,
        )

    def close(self) -> None:
        self._http.close()

    def upload(self, path: Path, *, model: str) -> str:
        """Upload a local file the SDK's way (getPolicy, then the signed form); the
        `oss://` reference a create request names it by."""
        answer = self._checked(
            self._http.get("/api/v1/uploads", params={"action": "getPolicy", "model": model})
        )
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        form = wire.upload_form(answer, file_name=path.name, content_type=content_type)
        with path.open("rb") as f:
            # The form is authorised by its signed policy; the API key is not sent along.
            res = httpx.post(
                form.url,
                data=form.fields,
                files={"file": (path.name, f, content_type)},
                timeout=TIMEOUT,
            )
        if res.status_code != 200:
            raise Refused(wire.read_error(_json(res), status=res.status_code), status=400)
        return form.oss_url

    def create(self, request: SynthesisRequest) -> str:
        res = self._http.post(
            CREATE_PATH,
            json=wire.create_body(request),
            headers={"X-DashScope-Async": "enable", "X-DashScope-OssResourceResolve": "enable"},
        )
        return wire.read_created(self._checked(res))

    def get(self, task_id: str) -> TaskOutcome:
        return wire.read_outcome(self._checked(self._http.get(f"/api/v1/tasks/{task_id}")))

    def cancel(self, task_id: str) -> None:
        """Ask for a cancel; a task that already ended is refused, which is fine here."""
        self._http.post(f"/api/v1/tasks/{task_id}/cancel")

    def events(self, task_id: str, *, last_id: str | None = None) -> Iterator[StreamEvent]:
        """The task's live events until the server closes the stream (after `done`, or on
        its shutdown: resume then with the last id seen)."""
        headers = {"Accept": "text/event-stream"}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
        timeout = httpx.Timeout(60.0, connect=10.0, read=STREAM_READ_TIMEOUT)
        with self._http.stream(
            "GET", f"/api/v1/tasks/{task_id}/events", headers=headers, timeout=timeout
        ) as res:
            if res.status_code == 204:
                return
            if res.status_code != 200:
                res.read()
                self._checked(res)
            yield from parse_events(res.iter_lines())

    def download(self, url: str, target: Path) -> None:
        """Stream the video to `target` (through a temporary name: never a partial file)."""
        partial = target.with_name(target.name + ".part")
        with httpx.stream("GET", url, timeout=TIMEOUT, follow_redirects=True) as res:
            if res.status_code != 200:
                res.read()
                raise Refused(wire.read_error(_json(res), status=res.status_code), status=1)
            with partial.open("wb") as f:
                for chunk in res.iter_bytes():
                    f.write(chunk)
        partial.replace(target)

    def _checked(self, res: httpx.Response) -> dict[str, Any]:
        body = _json(res)
        if res.status_code != 200 or not isinstance(body, dict):
            raise Refused(wire.read_error(body, status=res.status_code), status=res.status_code)
        return body


def parse_events(lines: Iterator[str]) -> Iterator[StreamEvent]:
    """Server-Sent Events from a stream's lines (the subset wanserve sends: `id`, `event`,
    one `data` line each; comments such as `: keep-alive` are skipped)."""
    kind, event_id, data = "message", None, ""
    for line in lines:
        if not line:
            if data:
                yield StreamEvent(kind=kind, id=event_id, data=json.loads(data))
            kind, data = "message", ""
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            kind = value
        elif name == "id":
            event_id = value
        elif name == "data":
            data = value if not data else f"{data}\n{value}"


def _json(res: httpx.Response) -> Any:
    try:
        return res.json()
    except ValueError:
        return res.text
