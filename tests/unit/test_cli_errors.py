"""A configuration the process cannot start with is one line on stderr naming the setting, with
no traceback and no secret, through the real `python -m wanserve` entry point."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.server import free_port
from tests.waiting import scaled


def run_wanserve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("WANSERVE_")}
    return subprocess.run(
        [sys.executable, "-m", "wanserve", *args],
        env=base | env,
        capture_output=True,
        text=True,
        # A hang guard only: these exit as soon as the settings are read.
        timeout=scaled(120),
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("wanserve: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"WANSERVE_MODELS": "not json"}, "WANSERVE_MODELS: not valid JSON (Expecting value"),
        ({"WANSERVE_MODELS": '{"wan9-t2v": {}}'}, "WANSERVE_MODELS: configuration overrides "),
        (
            {"WANSERVE_MODELS": '{"wan2.1-t2v-turbo": {"stepz": 3}}'},
            "WANSERVE_MODELS: wan2.1-t2v-turbo.stepz: Extra inputs are not permitted",
        ),
        ({"WANSERVE_LOG_LEVEL": "loud"}, "WANSERVE_LOG_LEVEL: Input should be 'debug', 'info'"),
        ({"WANSERVE_PORT": "eighty"}, "WANSERVE_PORT: Input should be a valid integer"),
        (
            {"WANSERVE_HEARTBEAT_SECONDS": "90"},
            "invalid configuration: heartbeat_timeout_seconds must exceed heartbeat_seconds",
        ),
    ],
)
def test_invalid_settings_are_one_line_naming_the_setting(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    result = run_wanserve({"WANSERVE_DATA_DIR": str(tmp_path), **env}, "serve")
    assert result.returncode == 2
    assert expected in one_error_line(result)


def test_a_command_line_option_is_named_as_given(tmp_path: Path) -> None:
    result = run_wanserve({"WANSERVE_DATA_DIR": str(tmp_path)}, "models", "--steps", "0")
    assert result.returncode == 2
    assert "--steps: Input should be greater than or equal to 1" in one_error_line(result)


def test_log_level_is_case_insensitive(tmp_path: Path) -> None:
    result = run_wanserve(
        {"WANSERVE_DATA_DIR": str(tmp_path), "WANSERVE_LOG_LEVEL": "DEBUG"}, "db", "upgrade"
    )
    assert result.returncode == 0, result.stderr


def test_unreachable_database_names_the_url_without_its_password(tmp_path: Path) -> None:
    # A port nobody listens on: refused at once, no server needed.
    url = f"postgresql+psycopg://bob:hunter2-secret@127.0.0.1:{free_port()}/wanserve"
    result = run_wanserve(
        {"WANSERVE_DATA_DIR": str(tmp_path), "WANSERVE_DATABASE_URL": url}, "serve"
    )
    line = one_error_line(result)
    assert result.returncode == 1  # the configuration may be right and the server down
    assert "WANSERVE_DATABASE_URL: cannot open postgresql+psycopg://bob:***@127.0.0.1" in line
    assert "hunter2-secret" not in result.stderr + result.stdout


@pytest.mark.parametrize("url", ["hunter2-secret:not a url", "nosuchdb://u:hunter2-secret@h/d"])
def test_unusable_database_url_is_not_echoed(tmp_path: Path, url: str) -> None:
    result = run_wanserve(
        {"WANSERVE_DATA_DIR": str(tmp_path), "WANSERVE_DATABASE_URL": url}, "keys", "list"
    )
    assert result.returncode == 2
    assert "WANSERVE_DATABASE_URL: unusable database URL" in one_error_line(result)
    assert "hunter2-secret" not in result.stderr + result.stdout


def test_unwritable_data_dir_names_it(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the data directory should go")
    result = run_wanserve({"WANSERVE_DATA_DIR": str(blocker / "data")}, "db", "upgrade")
    assert result.returncode == 1
    assert "WANSERVE_DATA_DIR: Not a directory" in one_error_line(result)
