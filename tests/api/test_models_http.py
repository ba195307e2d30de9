"""`GET /api/v1/models`: the catalogue as this deployment serves it. Every entry is checked
against the card it came from, and a request built from nothing but an entry is accepted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import Harness
from wanserve.catalog import Catalog, Kind, tier_of
from wanserve.request import Function


def models(h: Harness) -> dict[str, Any]:
    res = h.client.get("/api/v1/models", headers=h.headers())
    assert res.status_code == 200, res.text
    body: dict[str, Any] = res.json()
    assert body["request_id"] == res.headers["X-Request-Id"]
    return body


def by_name(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["model"]: entry for entry in body["models"]}


def test_every_model_is_listed_with_its_cards_limits(harness: Harness) -> None:
    catalog = Catalog.build()
    entries = by_name(models(harness))
    assert sorted(entries) == catalog.names()  # aliases included: both spellings are accepted
    for card in catalog:
        entry = entries[card.name]
        assert entry["kind"] == card.kind.value
        assert entry["generation"] == card.generation.value
        assert entry["fps"] == card.fps
        assert entry["prompt_limit"] == card.prompt_limit
        assert entry["durations"] == list(card.durations.allowed)
        assert entry["default_duration"] == card.durations.default
        assert [r["resolution"] for r in entry["resolutions"]] == list(card.tiers)
        assert entry["audio"] is card.audio
        assert ("audio" in entry["parameters"]) is card.audio
        if card.routes:  # a model that chooses its checkpoint by the inputs sent
            routes = [(r["kind"], r["checkpoint"]) for r in entry["routes"]]
            assert routes == [(r.kind.value, r.checkpoint.source) for r in card.routes]
            assert entry["media"] == {k: n for k, n in card.media_limits.items() if k != "total"}
            assert entry["prompt_required"] is (card.kind in (Kind.TEXT_TO_VIDEO, Kind.COMPOSITE))
            assert ("ratio" in entry["parameters"]) is bool(entry["ratios"])
            assert entry["functions"] == ([f.value for f in Function] if card.editing else [])
            continue
        assert ("audio_url" in entry["inputs"]) is card.audio
        assert entry["routes"] == [] and entry["media"] == {} and entry["functions"] == []
        if card.kind is Kind.TEXT_TO_VIDEO:
            assert entry["sized_by"] == "size" and entry["prompt_required"]
            listed = [s for r in entry["resolutions"] for s in r["sizes"]]
            assert listed == [str(s) for s in card.sizes]
            assert entry["default_size"] == str(card.default_size)
            assert card.default_size is not None
            assert entry["default_resolution"] == tier_of(card.default_size)
        else:
            assert entry["sized_by"] == "resolution" and not entry["prompt_required"]
            assert all(r["sizes"] == [] for r in entry["resolutions"])
            assert entry["default_size"] is None
            assert entry["default_resolution"] == card.default_tier


def test_inputs_follow_the_kind(harness: Harness) -> None:
    entries = by_name(models(harness))
    assert entries["wan2.1-t2v-turbo"]["inputs"] == ["prompt", "negative_prompt"]
    assert entries["wan2.2-i2v-flash"]["inputs"] == ["prompt", "negative_prompt", "img_url"]
    assert entries["wanx2.1-kf2v-plus"]["inputs"] == [
        "prompt",
        "negative_prompt",
        "first_frame_url",
        "last_frame_url",
    ]
    assert entries["wan2.6-i2v"]["inputs"][-1] == "audio_url"


def test_a_deployment_without_extender_or_dubbing_says_so(harness: Harness) -> None:
    body = models(harness)
    assert body["features"] == {"dubbing": False, "prompt_extension": False, "multi_shot": False}
    wan26 = by_name(body)["wan2.6-t2v"]
    assert wan26["shot_types"] == ["single"]
    assert wan26["dubbing"] is False and wan26["multi_shot"] is False


def test_features_and_overrides_of_this_deployment(
    harness_factory: Callable[..., Harness],
) -> None:
    h = harness_factory(
        start_workers=False,
        prompt_extender="openai",
        prompt_extender_url="http://127.0.0.1:9/v1",  # never called: nothing is submitted
        dubbing=True,
        steps=3,
        models={"wan2.1-t2v-turbo": {"steps": 7}},
    )
    body = models(h)
    assert body["features"] == {"dubbing": True, "prompt_extension": True, "multi_shot": True}
    entries = by_name(body)
    assert entries["wan2.6-t2v"]["shot_types"] == ["single", "multi"]
    assert entries["wan2.6-t2v"]["dubbing"] is True and entries["wan2.6-t2v"]["multi_shot"]
    # A wan2.5 model can dub but has no multi-shot; wan2.2 has neither, whatever the server.
    assert entries["wan2.5-t2v-preview"]["dubbing"] is True
    assert entries["wan2.5-t2v-preview"]["shot_types"] == ["single"]
    assert entries["wan2.2-t2v-plus"]["dubbing"] is False
    assert entries["wan2.1-t2v-turbo"]["steps"] == 7  # the per-model override
    assert entries["wan2.1-t2v-plus"]["steps"] == 3  # the global step count


@pytest.mark.parametrize("model", ["wan2.1-t2v-turbo", "wan2.6-t2v", "wan2.2-i2v-flash"])
def test_a_request_built_from_an_entry_is_accepted(
    harness_factory: Callable[..., Harness], model: str
) -> None:
    h = harness_factory(start_workers=False)
    entry = by_name(models(h))[model]
    last_tier = entry["resolutions"][-1]
    parameters: dict[str, Any] = {"duration": entry["durations"][-1], "seed": entry["seed_max"]}
    inputs: dict[str, Any] = {"prompt": "x" * entry["prompt_limit"]}
    if entry["sized_by"] == "size":
        parameters["size"] = last_tier["sizes"][-1]
    else:
        parameters["resolution"] = last_tier["resolution"]
        inputs["img_url"] = "https://example.com/cat.png"  # fetched only when the task runs
    res = h.create({"model": model, "input": inputs, "parameters": parameters})
    assert res.status_code == 200, res.text
    # ... and one value past what the entry lists is refused.
    parameters["duration"] = entry["durations"][-1] + 1
    res = h.create({"model": model, "input": inputs, "parameters": parameters})
    assert res.status_code == 400 and "duration" in res.json()["message"], res.text


def test_the_catalogue_needs_a_key(harness: Harness) -> None:
    res = harness.client.get("/api/v1/models")
    assert res.status_code == 401
    assert res.json()["code"] == "InvalidApiKey"
    res = harness.client.get("/api/v1/models", headers={"Authorization": "Bearer nope"})
    assert res.status_code == 401 and set(res.json()) == {"request_id", "code", "message"}
