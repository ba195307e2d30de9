"""Where the heavy libraries are imported, as docs/architecture.md and DEVELOPERS.md say, and
what loading the engine prints."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.waiting import scaled

PACKAGE = Path(__file__).resolve().parent.parent / "wanserve"
HEAVY = ("torch", "diffusers", "transformers")
# The modules that import them when they load (docs/architecture.md, "Layers").
TORCH_MODULES = {
    "engine/wan.py",
    "engine/dummy.py",
    "engine/dubbing.py",
    "engine/random_weights.py",
}


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=scaled(300),  # a hang guard: importing torch is slow on a busy machine
    )


def module_level_imports(path: Path) -> set[str]:
    """Top-level packages imported by `path` when it loads (not inside functions)."""
    found: set[str] = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_only_the_documented_modules_import_torch_when_they_load() -> None:
    heavy = {
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if module_level_imports(p) & set(HEAVY)
    }
    assert heavy == TORCH_MODULES


def test_the_api_and_the_cli_load_without_torch() -> None:
    # Every module outside the engine's torch modules, imported together: none pulls them in.
    names = sorted(
        "wanserve." + ".".join(p.relative_to(PACKAGE).with_suffix("").parts)
        for p in PACKAGE.rglob("*.py")
        if str(p.relative_to(PACKAGE)) not in TORCH_MODULES
        and p.name != "__main__.py"
        and "migrations" not in p.parts
    )
    names = [n.removesuffix(".__init__") for n in names]
    out = python(
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    assert out.stdout.strip() == "[]"


def test_loading_the_engine_prints_no_torchvision_notice() -> None:
    out = python("import wanserve.engine.wan, wanserve.engine.dummy")
    assert "torchvision" not in out.stderr, out.stderr
