"""Where the heavy libraries are imported, as docs/architecture.md and DEVELOPERS.md say, what
an API process loads (none of the engine's libraries, nor the media layer's), and what loading
the engine prints."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import redis

from tests.conftest import private_database
from tests.server import ServerProcess
from tests.waiting import scaled

PACKAGE = Path(__file__).resolve().parent.parent / "wanserve"
HEAVY = ("torch", "diffusers", "transformers")
# What an API process never loads: the engine's libraries, and the media layer's (frames,
# images and sound are the worker's business).
NOT_IN_THE_API = (*HEAVY, "numpy", "PIL", "av")
# The modules that import them when they load (docs/architecture.md, "Layers").
TORCH_MODULES = {
    "engine/wan.py",
    "engine/dummy.py",
    "engine/dubbing.py",
    "engine/random_weights.py",
    "engine/annotators.py",
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


def loaded_by(process_log: str) -> list[tuple[int, str]]:
    """The modules a process imported, from its `-X importtime` lines (PYTHONPROFILEIMPORTTIME),
    each with its nesting depth, in the order the imports ended (a module after those it
    imported)."""
    found = []
    for line in process_log.splitlines():
        if line.startswith("import time:") and not line.rstrip().endswith("imported package"):
            name = line.split("|", 2)[2]
            found.append((len(name) - len(name.lstrip(" ")), name.strip()))
    return found


def chain(imports: list[tuple[int, str]], index: int) -> str:
    """Who imported `imports[index]`: each module below is imported by the next one."""
    depth, name = imports[index]
    names = [name]
    for outer_depth, outer in imports[index + 1 :]:
        if outer_depth < depth:
            names.append(outer)
            depth = outer_depth
    return " <- ".join(names)


def api_process_loads(imports: list[tuple[int, str]]) -> list[str]:
    """The chains by which the process loaded any of `NOT_IN_THE_API` (empty: none)."""
    return [
        chain(imports, i)
        for i, (_, name) in enumerate(imports)
        if name in NOT_IN_THE_API  # a package's own import ends after its submodules'
    ]


def test_the_api_composition_root_loads_no_engine_or_media_library() -> None:
    # What an API-only process imports before its first request, fleet mode's producer too.
    names = ["wanserve.cli", "wanserve.compose.api", "wanserve.compose.shared"]
    names += ["wanserve.tasks.celery"]
    out = python(
        "import importlib, sys\n"
        f"for name in {names!r}: importlib.import_module(name)\n"
        f"print(sorted(m for m in {NOT_IN_THE_API!r} if m in sys.modules))"
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.postgres
def test_an_api_process_in_fleet_mode_loads_no_engine_or_media_library(
    tmp_path: Path, redis_url: str
) -> None:
    """A real `wanserve serve --workers 0` with a broker (Celery on the local Redis) and a
    PostgreSQL store, after a create (sent to the broker) and a poll: every module the process
    imported, from Python's own import log, and none is one of the six."""
    with private_database() as database_url:
        server = ServerProcess(
            tmp_path,
            WANSERVE_WORKERS="0",
            WANSERVE_SECRET_KEY="imports-test-secret-0123456789abcdef",
            WANSERVE_DATABASE_URL=database_url,
            WANSERVE_BROKER_URL=redis_url,
            PYTHONPROFILEIMPORTTIME="1",  # python -X importtime: each import, on stderr
        )
        key = server.create_key()
        headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
        body = {"model": "wan2.1-t2v-turbo", "input": {"prompt": "a fox"}}
        with server:
            created = httpx.post(
                f"{server.base}/api/v1/services/aigc/video-generation/video-synthesis",
                json=body,
                headers=headers,
                timeout=scaled(30),
            )
            task_id = created.json()["output"]["task_id"]
            polled = httpx.get(
                f"{server.base}/api/v1/tasks/{task_id}", headers=headers, timeout=scaled(30)
            )
            assert polled.json()["output"]["task_status"] == "PENDING"
    log = server.log.read_text()
    assert "take them from the broker" in log  # fleet mode, not the table
    # The create went through Celery: its message is in the model's queue (taken out again).
    queue = redis.Redis.from_url(redis_url)
    sent = [m for m in queue.lrange("gen.wan2.1-t2v-turbo", 0, -1) if task_id.encode() in m]
    for message in sent:
        queue.lrem("gen.wan2.1-t2v-turbo", 1, message)
    assert len(sent) == 1
    imports = loaded_by(log)
    assert api_process_loads(imports) == []
    assert "wanserve.tasks.celery" in {name for _, name in imports}  # the import log is read
