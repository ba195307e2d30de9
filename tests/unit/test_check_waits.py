"""tests/check_waits.py, the lint that refuses waits on the clock in tests: it flags each kind of
sleep and literal timeout, and passes what goes through tests/waiting.py or is no timeout."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.check_waits import check_source, main

HEADER = """\
import asyncio
import subprocess
import threading
import time

import httpx
import pytest

from tests.waiting import expiring, join, pause, scaled, wait_event, wait_process, wait_until
"""


def lines(snippet: str) -> list[int]:
    """The lines of `snippet` (1 = its first) with a finding."""
    found = check_source(HEADER + textwrap.dedent(snippet))
    offset = HEADER.count("\n")
    return sorted({f.line - offset for f in found})


@pytest.mark.parametrize(
    "snippet",
    [
        # sleeps, whatever their argument
        "time.sleep(1)",
        "time.sleep(interval)",
        "asyncio.sleep(0)",
        "page.wait_for_timeout(500)",
        # literal timeouts in keywords, positionally, and in httpx.Timeout
        "httpx.get(url, timeout=30)",
        "httpx.Client(timeout=httpx.Timeout(scaled(30), read=120))",
        "subprocess.run(['x'], timeout=600)",
        "q.get(timeout=5)",
        "psycopg.connect(url, connect_timeout=int(10))",
        "redis.Redis.from_url(url, socket_connect_timeout=-1 + 6)",
        "client.get(url, timeout=scaled(30) if fast else 30)",
        "proc.wait(60)",
        "event.wait(0.02)",
        "thread.join(600)",
        "thread.join(timeout=600)",
        "future.result(10)",
        "cond.wait_for(lambda: done, 5)",
        "asyncio.wait_for(coro, 5)",
        "proc.communicate(None, 5)",
        "lock.acquire(True, 5)",
        "q.put(item, True, 5)",
        "sock.settimeout(2.5)",
        "pytest.mark.timeout(900)",
        # deadlines on the clock
        "deadline = time.monotonic() + 30",
        "assert time.monotonic() - started < 5",
        "end = time.perf_counter() + 2 * 10",
        # httpx's hidden default
        "httpx.get(url)",
        "httpx.post(url, json=body)",
        "httpx.Client(base_url=base)",
        # the names say timeout
        "def f(*, timeout: float = 60.0) -> None: ...",
        "def f(read_timeout=1.0, /) -> None: ...",
        "TIMEOUT = 30",
        "self.read_timeout = 5",
        "limits = {'read_timeout': 1.0}",
    ],
)
def test_it_flags(snippet: str) -> None:
    assert lines(snippet) == [1], snippet


@pytest.mark.parametrize(
    "snippet",
    [
        "pause(0.1)",
        "wait_until(check, done, stall=600, interval=0.2)",
        "httpx.get(url, timeout=scaled(30))",
        "httpx.Client(timeout=httpx.Timeout(scaled(30), read=scaled(120)))",
        "httpx.Client(timeout=None)",
        "httpx.post(url, **kw)",  # a timeout may be in kw
        "psycopg.connect(url, connect_timeout=int(scaled(10)))",
        "extender(url, timeout=expiring(0.5))",
        "proc.wait(scaled(60))",
        "proc.wait()",
        "wait_process(proc, 60)",
        "join(thread, stall=600)",
        "wait_event(event, what='x')",
        "thread.join()",
        "event.wait(bound)",
        "h.wait(task_id)",
        "client.get(url, timeout=timeout)",
        "pytest.mark.timeout(scaled(900))",
        # not timeouts
        "'/'.join(['d' * 200] * 4)",
        "', '.join(str(n) for n in range(3))",
        "d.get('k', 5)",
        "x = {'retries': 3, 'step_seconds': 0.1}",
        "harness(task_timeout_seconds=0.5)",
        "old = time.time() - 60",
        "took = time.monotonic() - started",
        "limiter.acquire('k', rate=2, burst=3)",
        "print('timeout=30; time.sleep(1)')",
        "# time.sleep(1)",
        "def sleep(seconds: float) -> None: pause(seconds)",
        "sleep(1)",  # not the time module's: a local function
        "other.sleep(1)",  # nor this
    ],
)
def test_it_passes(snippet: str) -> None:
    assert lines(snippet) == [], snippet


def test_it_follows_aliases_and_imports_by_name() -> None:
    source = """\
        import time as clock
        import httpx as h
        from time import sleep as nap, monotonic
        from tests import waiting
        import tests.waiting as w
        clock.sleep(1)
        nap(1)
        h.get(url)
        deadline = monotonic() + 5
        waiting.pause(1)
        x.wait(w.scaled(5))
        x.wait(waiting.scaled(5))
    """
    assert lines(source) == [6, 7, 8, 9]


def test_every_number_of_a_flagged_expression_is_reported_once() -> None:
    found = check_source("import httpx\nhttpx.get(u, timeout=httpx.Timeout(3, read=4))\n")
    assert [(f.line, f.col) for f in found] == [(2, 35), (2, 43)]
    assert all("literal" in f.message for f in found)


def test_the_command_lists_findings_and_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad, good = tmp_path / "bad.py", tmp_path / "good.py"
    bad.write_text("import time\n\ntime.sleep(1)\n")
    good.write_text("x = 1\n")
    assert main([str(good)]) == 0
    assert main([str(good), str(bad)]) == 1
    assert f"{bad}:3:1: a sleep" in capsys.readouterr().out
    assert main([str(tmp_path)]) == 1  # a folder: every .py file under it
    assert f"{bad}:3:1: a sleep" in capsys.readouterr().out
