"""Refuse a wait on the clock in tests outside `tests/waiting.py` (run by `make lint`).

`python tests/check_waits.py [PATH ...]` (files or folders; default: every `tests/**/*.py`)
prints `file:line:col: message` for each finding and exits 1 if there is any. It reads the
syntax tree, not the text, so a string, a comment or a dict's default value is never taken for
a timeout. It refuses:

1. A sleep: any call of `time.sleep` or `asyncio.sleep` (through any alias of the module, or
   the function imported by name), and Playwright's `wait_for_timeout`, whatever the argument.
   A test waits for an event instead (`wait_until`, `wait_event`, ...); a fake's simulated work
   is `pause(seconds)`.
2. A literal number where a timeout goes: the value of a keyword argument, a parameter's
   default, an assignment's target or a dict display's string key named `timeout` or
   `*_timeout` (`timeout=30`, `connect_timeout=10`, `def f(timeout=60)`, `{"read_timeout":
   1.0}`); the timeout argument of `.wait(N)`, `.join(N)`, `.result(N)`, `.exception(N)`,
   `.settimeout(N)` and `.timeout(N)` (pytest-timeout's marker), the second one of
   `.wait_for(x, N)`, `.communicate(x, N)` and `.acquire(x, N)`, the third of `.put(x, b, N)`;
   any argument of `Timeout(...)` (httpx's).
3. A deadline computed from the clock: a number added to, subtracted from or compared with an
   expression that reads `time.monotonic()` or `time.perf_counter()` (`time.time()` is left
   out: tests build wall-clock timestamps from it, "an hour ago", which are no deadlines).
4. httpx's hidden 5 s deadline: `httpx.get/post/...(...)`, `httpx.request`, `httpx.stream`,
   `httpx.Client(...)` or `httpx.AsyncClient(...)` without a `timeout=` argument.

"A literal number" is an int or float constant reached through arithmetic, conditional
expressions and the arguments of ordinary calls (`int(10)`, `max(5, t)`), but never inside a
call of a function from `tests/waiting.py` (`scaled(30)`, `expiring(0.5)`, `wait_until(...,
stall=600)`), nor inside a string, list, tuple, dict or comprehension (`"/".join(["d"] * 4)`
is no timeout). Names are trusted: `timeout=bound` passes, and `bound = 30` is caught only where the
name says it is a timeout. Settings of the service under test (`task_timeout_seconds`,
`heartbeat_timeout_seconds`) are not the test's own waits and are not checked here;
`make_settings` in tests/conftest.py scales those a healthy run must beat.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

WAITING_MODULE = "tests.waiting"

# Method name and the index of its positional timeout argument.
POSITIONAL_TIMEOUT = dict(
    [
        ("wait", 0),
        ("join", 0),
        ("result", 0),
        ("exception", 0),
        ("settimeout", 0),
        ("timeout", 0),
        ("wait_for", 1),
        ("communicate", 1),
        ("acquire", 1),
        ("put", 2),
    ]
)
# The clocks that measure intervals. `time.time()` is left out: tests build wall-clock
# timestamps from it ("an hour ago"), which are no deadlines.
CLOCKS = {"monotonic", "perf_counter", "monotonic_ns", "perf_counter_ns"}
SLEEPING_MODULES = {"time", "asyncio"}
HTTPX_CALLS = {
    "get",
    "post",
    "put",
    "patch",
    "delete",
    "head",
    "options",
    "request",
    "stream",
    "Client",
    "AsyncClient",
}


@dataclass(frozen=True, order=True)
class Finding:
    line: int
    col: int
    message: str


def is_sequence(node: ast.expr) -> bool:
    """A string or a container: arithmetic on it (`[x] * 4`, `"a" * 251`) is no number."""
    return isinstance(
        node,
        ast.List | ast.Tuple | ast.Set | ast.Dict | ast.ListComp | ast.JoinedStr | ast.GeneratorExp,
    ) or (isinstance(node, ast.Constant) and isinstance(node.value, str | bytes))


def is_timeout_name(name: str) -> bool:
    return name == "timeout" or name.endswith("_timeout")


class Checker(ast.NodeVisitor):
    def __init__(self) -> None:
        self.findings: dict[tuple[int, int], Finding] = {}  # the first message at a place
        self.helpers: set[str] = set()  # names bound to a tests.waiting function
        self.waiting_aliases: set[str] = set()  # names bound to the tests.waiting module
        self.modules: dict[str, str] = {}  # local name -> module, for time/asyncio/httpx
        self.sleeps: set[str] = set()  # `sleep` imported by name from time or asyncio
        self.clocks: set[str] = set()  # clock functions imported by name from time

    # --- imports --------------------------------------------------------------------------

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == WAITING_MODULE and alias.asname:
                self.waiting_aliases.add(alias.asname)
            elif alias.name in SLEEPING_MODULES | {"httpx"}:
                self.modules[alias.asname or alias.name] = alias.name
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            local = alias.asname or alias.name
            if node.module == WAITING_MODULE:
                self.helpers.add(local)
            elif node.module == "tests" and alias.name == "waiting":
                self.waiting_aliases.add(local)
            elif node.module in SLEEPING_MODULES and alias.name == "sleep":
                self.sleeps.add(local)
            elif node.module == "time" and alias.name in CLOCKS:
                self.clocks.add(local)
        self.generic_visit(node)

    # --- what an expression is ------------------------------------------------------------

    def is_helper_call(self, node: ast.AST) -> bool:
        if not isinstance(node, ast.Call):
            return False
        func = node.func
        if isinstance(func, ast.Name):
            return func.id in self.helpers
        return (
            isinstance(func, ast.Attribute)
            and isinstance(func.value, ast.Name)
            and func.value.id in self.waiting_aliases
        )

    def module_of(self, node: ast.expr) -> str | None:
        return self.modules.get(node.id) if isinstance(node, ast.Name) else None

    def bare_numbers(self, node: ast.AST) -> Iterator[ast.Constant]:
        """The literal numbers in `node` that no tests.waiting function wraps."""
        if isinstance(node, ast.Constant):
            if isinstance(node.value, int | float) and not isinstance(node.value, bool):
                yield node
        elif isinstance(node, ast.UnaryOp):
            yield from self.bare_numbers(node.operand)
        elif isinstance(node, ast.BinOp) and not (
            is_sequence(node.left) or is_sequence(node.right)
        ):
            yield from self.bare_numbers(node.left)
            yield from self.bare_numbers(node.right)
        elif isinstance(node, ast.IfExp):
            yield from self.bare_numbers(node.body)
            yield from self.bare_numbers(node.orelse)
        elif isinstance(node, ast.BoolOp):
            for value in node.values:
                yield from self.bare_numbers(value)
        elif isinstance(node, ast.Call) and not self.is_helper_call(node):
            for arg in node.args:
                yield from self.bare_numbers(arg)
            for kw in node.keywords:
                yield from self.bare_numbers(kw.value)

    def reads_clock(self, node: ast.AST) -> bool:
        for sub in ast.walk(node):
            if not isinstance(sub, ast.Call):
                continue
            func = sub.func
            if isinstance(func, ast.Name) and func.id in self.clocks:
                return True
            if (
                isinstance(func, ast.Attribute)
                and func.attr in CLOCKS
                and self.module_of(func.value) == "time"
            ):
                return True
        return False

    def refuse(self, node: ast.AST | None, what: str) -> None:
        """A finding for every bare number in `node`, described as `what`."""
        if node is None:
            return
        for const in self.bare_numbers(node):
            self.add(
                const,
                f"literal {const.value!r} as {what}: use a tests/waiting.py helper "
                "(scaled(...), or expiring(...) for a timeout meant to run out)",
            )

    def add(self, node: ast.expr, message: str) -> None:
        self.findings.setdefault(
            (node.lineno, node.col_offset), Finding(node.lineno, node.col_offset, message)
        )

    # --- the rules ------------------------------------------------------------------------

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
        owner = self.module_of(func.value) if isinstance(func, ast.Attribute) else None

        # 1. sleeps
        is_sleep = (isinstance(func, ast.Name) and func.id in self.sleeps) or (
            name == "sleep" and owner in SLEEPING_MODULES
        )
        if is_sleep or (isinstance(func, ast.Attribute) and name == "wait_for_timeout"):
            self.add(
                node,
                "a sleep: wait for an event (tests/waiting.py: wait_until, wait_event, ...); "
                "a fake's simulated work is pause(seconds)",
            )

        # 2. timeouts: keywords, positional timeouts, httpx.Timeout
        if not self.is_helper_call(node):
            for kw in node.keywords:
                if kw.arg is not None and is_timeout_name(kw.arg):
                    self.refuse(kw.value, f"`{kw.arg}=`")
            if isinstance(func, ast.Attribute) and name in POSITIONAL_TIMEOUT:
                index = POSITIONAL_TIMEOUT[name]
                if len(node.args) > index and not any(
                    isinstance(a, ast.Starred) for a in node.args[: index + 1]
                ):
                    self.refuse(node.args[index], f"the timeout of `.{name}(...)`")
            if name == "Timeout":
                for arg in node.args:
                    self.refuse(arg, "an httpx.Timeout")
                for kw in node.keywords:
                    self.refuse(kw.value, "an httpx.Timeout")

        # 4. httpx's default timeout
        if (
            owner == "httpx"
            and name in HTTPX_CALLS
            and not any(kw.arg in ("timeout", None) for kw in node.keywords)
        ):
            self.add(
                node,
                f"httpx.{name}() without timeout=: httpx's default 5 s deadline is not "
                "scaled; pass timeout=scaled(...)",
            )
        self.generic_visit(node)

    def visit_arguments(self, node: ast.arguments) -> None:
        positional = [*node.posonlyargs, *node.args]
        pairs = list(
            zip(positional[len(positional) - len(node.defaults) :], node.defaults, strict=True)
        )
        pairs += [
            (a, d) for a, d in zip(node.kwonlyargs, node.kw_defaults, strict=True) if d is not None
        ]
        for arg, default in pairs:
            if is_timeout_name(arg.arg):
                self.refuse(default, f"the default of `{arg.arg}`")
        self.generic_visit(node)

    def _targets(self, targets: Iterable[ast.expr], value: ast.expr | None) -> None:
        for target in targets:
            name = (
                target.id
                if isinstance(target, ast.Name)
                else target.attr
                if isinstance(target, ast.Attribute)
                else None
            )
            if name is not None and is_timeout_name(name.lower()):
                self.refuse(value, f"`{name}`")

    def visit_Assign(self, node: ast.Assign) -> None:
        self._targets(node.targets, node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        self._targets([node.target], node.value)
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if (
                isinstance(key, ast.Constant)
                and isinstance(key.value, str)
                and is_timeout_name(key.value)
            ):
                self.refuse(value, f'"{key.value}"')
        self.generic_visit(node)

    # 3. deadlines from the clock
    def _clock_arithmetic(self, operands: list[ast.expr]) -> None:
        clocked = [self.reads_clock(op) for op in operands]
        if any(clocked):
            for op, reads in zip(operands, clocked, strict=True):
                if not reads:
                    self.refuse(op, "a deadline on the clock")

    def visit_BinOp(self, node: ast.BinOp) -> None:
        if isinstance(node.op, ast.Add | ast.Sub):
            self._clock_arithmetic([node.left, node.right])
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        self._clock_arithmetic([node.left, *node.comparators])
        self.generic_visit(node)


def check_source(source: str, filename: str = "<source>") -> list[Finding]:
    """The findings in one module's source, in order."""
    checker = Checker()
    checker.visit(ast.parse(source, filename))
    return sorted(checker.findings.values())


def main(argv: list[str]) -> int:
    tests = Path(__file__).resolve().parent
    exempt = tests / "waiting.py"
    roots = [Path(a) for a in argv] or [tests]
    paths = [p for root in roots for p in (sorted(root.rglob("*.py")) if root.is_dir() else [root])]
    bad = 0
    for path in paths:
        if path.resolve() == exempt:
            continue
        for f in check_source(path.read_text(), str(path)):
            print(f"{path}:{f.line}:{f.col + 1}: {f.message}")
            bad += 1
    if bad:
        print(
            f"{bad} wait(s) on the clock in tests: route them through tests/waiting.py",
            file=sys.stderr,
        )
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
