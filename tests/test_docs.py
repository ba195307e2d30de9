"""The docs stay true to the code: every setting, model and CLI command is documented."""

from __future__ import annotations

from pathlib import Path

from wanserve.catalog import Catalog
from wanserve.cli import build_parser
from wanserve.config import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"`{name}`" in text and f"`WANSERVE_{name.upper()}`" in text, name


def test_every_model_is_documented() -> None:
    text = (ROOT / "docs" / "models.md").read_text()
    for name in Catalog.build().names():
        assert f"`{name}`" in text, name


def test_readme_commands_exist() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make serve" in readme and "make test" in readme
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command in ("serve", "generate", "keys", "models", "db"):
        assert command in commands and f"wanserve {command}" in readme
