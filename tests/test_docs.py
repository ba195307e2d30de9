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
    for command in ("serve", "keys", "models", "db"):
        assert command in commands and f"wanserve {command}" in readme


def _wanserve_variables(text: str) -> set[str]:
    import re

    return set(re.findall(r"\bWANSERVE_[A-Z0-9_]*[A-Z0-9]", text))


def test_deployment_files_name_only_real_settings() -> None:
    """Every WANSERVE_* variable the deployment doc, the compose file and the systemd files
    name is a setting (a typo there would be silently ignored by the process)."""
    import yaml

    real = {f"WANSERVE_{name.upper()}" for name in Settings.model_fields}
    compose_text = (ROOT / "deploy" / "compose.yaml").read_text()
    compose = yaml.safe_load(compose_text)
    named: set[str] = set()
    for service in compose["services"].values():
        environment = service.get("environment") or {}
        assert isinstance(environment, dict)  # the mapping form, so keys can be checked
        named |= {k for k in environment if k.startswith("WANSERVE_")}
    assert named, "the compose file sets no WANSERVE_* variable"
    texts = [compose_text, (ROOT / "docs" / "deployment.md").read_text()]
    texts += [p.read_text() for p in (ROOT / "deploy" / "systemd").iterdir()]
    for text in texts:
        named |= _wanserve_variables(text)
    assert named - real == set()


def test_compose_runs_api_replicas_and_gpu_workers() -> None:
    import yaml

    services = yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text())["services"]
    apis = [s for s in services.values() if s.get("command", [])[:3] == ["serve", "--workers", "0"]]
    workers = [s for s in services.values() if s.get("command", [None])[0] == "worker"]
    assert len(apis) == 2 and workers
    for worker in workers:
        devices = worker["deploy"]["resources"]["reservations"]["devices"]
        assert devices[0]["capabilities"] == ["gpu"]
        assert "CUDA_VISIBLE_DEVICES" in worker["environment"]
        models = worker["command"][worker["command"].index("--models") + 1].split(",")
        assert set(models) <= set(Catalog.build().names())
