"""The task state machine: which status may follow which. `TaskStore` applies every change
as a conditional update built from `sources_of`, so this table is the only authority.

    PENDING ──claim──> RUNNING ──> SUCCEEDED | FAILED | CANCELED
       │                  │
       │                  └──requeue (worker lost / shutting down)──> PENDING
       └──cancel / cannot start──> CANCELED | FAILED
"""

from __future__ import annotations

from wanserve.tasks.models import TaskStatus

_P, _R = TaskStatus.PENDING, TaskStatus.RUNNING
_S, _F, _C = TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED

_ALLOWED: dict[TaskStatus, frozenset[TaskStatus]] = {
    _P: frozenset({_R, _C, _F}),
    _R: frozenset({_S, _F, _C, _P}),
    _S: frozenset(),
    _F: frozenset(),
    _C: frozenset(),
}


class IllegalTransition(Exception):
    def __init__(self, current: TaskStatus, target: TaskStatus) -> None:
        super().__init__(f"a {current.value} task cannot become {target.value}")
        self.current = current
        self.target = target


def can_transition(current: TaskStatus, target: TaskStatus) -> bool:
    return target in _ALLOWED[current]


def check_transition(current: TaskStatus, target: TaskStatus) -> None:
    if not can_transition(current, target):
        raise IllegalTransition(current, target)


def sources_of(target: TaskStatus) -> frozenset[TaskStatus]:
    """Every status from which `target` may be reached."""
    return frozenset(s for s, nexts in _ALLOWED.items() if target in nexts)
