"""The docs stay true to the code: every setting, model and CLI command is documented, and the
README's examples run as written."""

from __future__ import annotations

import argparse
import ast
import builtins
import re
from pathlib import Path

from wanserve.catalog import Catalog, ModelOverride
from wanserve.cli import EPILOG, build_parser
from wanserve.config import Settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.DOTALL)


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    for name in Settings.model_fields:
        assert f"`{name}`" in text and f"`WANSERVE_{name.upper()}`" in text, name


def test_every_per_model_override_is_documented() -> None:
    # The keys of WANSERVE_MODELS entries are settings too, one level down.
    text = (ROOT / "docs" / "configuration.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| `models` |"))
    for name in ModelOverride.model_fields:
        assert f"`{name}`" in row, name


def test_every_model_is_documented() -> None:
    text = (ROOT / "docs" / "models.md").read_text()
    for name in Catalog.build().names():
        assert f"`{name}`" in text, name


def test_readme_commands_exist() -> None:
    assert "make serve" in README and "make test" in README
    assert (ROOT / ".ci" / "run").read_text().strip().endswith("make test")
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command in ("serve", "generate", "keys", "models", "db"):
        assert command in commands and f"wanserve {command}" in README


def _defined_names(tree: ast.Module) -> set[str]:
    names = set(dir(builtins))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def test_readme_python_compiles_and_defines_every_name_it_uses() -> None:
    """A reader pastes each block into Python as it is: no shell variables, no names from
    elsewhere. (tests/sdk runs the SDK block against a real server.)"""
    blocks = code_blocks(README, "python")
    assert blocks
    for block in blocks:
        tree = ast.parse(block)
        compile(tree, "README.md", "exec")
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        assert used <= _defined_names(tree), used - _defined_names(tree)


def test_readme_shell_variables_are_set_before_use() -> None:
    assigned: set[str] = set()
    for block in code_blocks(README, "sh"):
        for line in block.splitlines():
            # Single-quoted text is literal to the shell: no expansion there.
            unquoted = re.sub(r"'[^']*'", "", line)
            used = set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", unquoted))
            assert used <= assigned, (line, used - assigned)
            assigned |= set(re.findall(r"(?:^|\s|export\s+)([A-Za-z_][A-Za-z0-9_]*)=", line))


def test_the_epilog_names_every_option_that_is_not_a_setting() -> None:
    """`--help` says options come from the environment; the ones that do not are named."""
    parser = build_parser()
    not_settings = set()
    pending = [parser]
    while pending:
        current = pending.pop()
        for action in current._actions:
            if isinstance(action, argparse._SubParsersAction):
                pending.extend(action.choices.values())
            elif (
                not isinstance(action, argparse._HelpAction | argparse._VersionAction)
                and action.dest not in Settings.model_fields
            ):
                flags = action.option_strings
                not_settings.add(flags[0] if flags else action.dest.upper())
    assert "--name" in not_settings  # keys create --name: the case that made the text untrue
    missing = {name for name in not_settings if name not in EPILOG}
    assert not missing, f"command-line-only options the epilog does not name: {missing}"


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
