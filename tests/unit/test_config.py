"""Settings: validated once; errors never echo values (they may be secrets)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from wanserve.cli import main
from wanserve.config import Settings


def test_errors_do_not_echo_secrets() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(
            secret_key="super-secret-value-123",
            database_url="postgresql://u:pw-456@h/db",
            weights="nope",
        )  # type: ignore[arg-type]
    text = str(info.value)
    assert "weights" in text
    assert "super-secret-value-123" not in text and "pw-456" not in text


def test_secrets_are_not_printed_or_repr(tmp_path: object) -> None:
    s = Settings(secret_key="super-secret-value-123")
    assert "super-secret-value-123" not in repr(s)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt_extender": "openai"}, "needs prompt_extender_url"),
        ({"prompt_extender": "local"}, "needs prompt_extender_path"),
        ({"heartbeat_seconds": 10, "heartbeat_timeout_seconds": 5}, "must exceed"),
        ({"openai_default_model": "sora-2"}, "not a model of the catalogue"),
        ({"openai_default_model": "wan2.2-i2v-flash"}, "is not a t2v model"),
        ({"openai_default_image_model": "wan2.1-t2v-turbo"}, "is not a i2v model"),
    ],
)
def test_inconsistent_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(**kwargs)  # type: ignore[arg-type]


def test_cli_reports_bad_configuration_without_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WANSERVE_SECRET_KEY", "super-secret-value-123")
    monkeypatch.setenv("WANSERVE_WEIGHTS", "bogus")
    assert main(["models"]) == 2
    err = capsys.readouterr().err
    assert err == "wanserve: error: WANSERVE_WEIGHTS: Input should be 'auto', 'dummy' or 'random'\n"


def models_table(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, list[str]]:
    assert main(["models", *args]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    return {row[0]: row for row in rows[1:]}


def test_models_shows_the_catalogue_as_serve_would_run_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WANSERVE_MODELS", '{"wan2.1-t2v-plus": {"steps": 9}}')
    real = models_table(capsys)
    assert real["wan2.1-t2v-turbo"][5] == "50"  # the family's official count
    assert real["wan2.1-t2v-turbo"][6] == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    dummy = models_table(capsys, "--weights", "dummy")
    assert dummy["wan2.1-t2v-turbo"][5:7] == ["4", "dummy"]
    assert dummy["wan2.1-t2v-plus"][5] == "9"  # a per-model override beats the global count
    monkeypatch.setenv("WANSERVE_WEIGHTS", "dummy")
    assert models_table(capsys, "--steps", "7")["wan2.1-t2v-turbo"][5:7] == ["7", "dummy"]


def test_a_list_setting_that_is_not_json_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # e.g. a systemd EnvironmentFile with WANSERVE_WORKER_MODELS=a,b: one line, no traceback.

    monkeypatch.setenv("WANSERVE_WORKER_MODELS", "wan2.1-t2v-turbo,wan2.2-i2v-flash")
    assert main(["worker"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wanserve: error: WANSERVE_WORKER_MODELS: not valid JSON")
    assert len(err.strip().splitlines()) == 1
