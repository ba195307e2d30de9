"""`/health`, `/ready` and `/metrics` of the real app: readiness lists exactly what is not
ready, and HTTP metrics are labelled by route template, never by raw path."""

from __future__ import annotations

import shutil
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import T2V, Harness


def http_series(h: Harness) -> list[dict[str, str]]:
    text = h.client.get("/metrics").text
    return [
        dict(s.labels)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == "wanserve_http_requests_total"
    ]


def test_ready_lists_what_is_not_ready(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(start_workers=False)
    assert h.client.get("/health").json() == {"status": "ok"}
    res = h.client.get("/ready")
    assert res.status_code == 503
    body = res.json()
    assert body["code"] == "ServiceUnavailable" and body["request_id"]
    assert body["message"] == "Not ready: workers: the generation threads are not running."

    running = harness_factory(data_dir=h.settings.data_dir.parent / "other")
    assert running.client.get("/ready").json() == {"status": "ready"}
    shutil.rmtree(running.components.services.storage.root)  # type: ignore[attr-defined]
    res = running.client.get("/ready")
    assert res.status_code == 503
    assert res.json()["message"] == (
        "Not ready: storage: file storage cannot be reached or written."
    )


def test_http_metrics_use_route_templates(harness: Harness) -> None:
    task_id = harness.create(T2V).json()["output"]["task_id"]
    for _ in range(3):
        harness.get(task_id)
    harness.client.get(f"/no/such/{task_id}")
    series = http_series(harness)
    assert not any(task_id in value for labels in series for value in labels.values())
    routes = {(s["method"], s["route"], s["status"]) for s in series}
    assert ("GET", "/api/v1/tasks/{task_id}", "200") in routes
    assert ("POST", "/api/v1/services/aigc/{task_group}/video-synthesis", "200") in routes
    assert ("GET", "unmatched", "404") in routes
