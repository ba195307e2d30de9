"""Text every store can hold: Unicode scalar values, without NUL.

JSON escapes (`"\\ud800"`) and argv bytes that are not UTF-8 (decoded with `surrogateescape`)
both give Python strings with lone UTF-16 surrogates, which cannot be encoded as UTF-8 and so
cannot be stored; PostgreSQL `text` cannot hold NUL either. Such text is refused where a
request is parsed (the API's body, query and path; the CLI's arguments), before anything is
stored, so the task store, the key store and the upload store never see it.
"""

from __future__ import annotations

import re

from wanserve.errors import InvalidParameter

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def problem(value: str) -> str | None:
    """Why `value` cannot be stored, or None when it can."""
    found = _UNSTORABLE.search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "contains a NUL character (U+0000)"
    return f"contains a lone UTF-16 surrogate (U+{ord(char):04X}), which is not Unicode text"


def check(value: str, *, field: str) -> str:
    """`value` unchanged, or `InvalidParameter` naming the field."""
    why = problem(value)
    if why is not None:
        raise InvalidParameter(f"{field} {why}.")
    return value


def check_document(document: object) -> None:
    """Check every string of a parsed JSON document, object keys included; the error names
    the field by its path (`input.prompt`, `parameters.size`, `input.media[0].url`)."""
    stack: list[tuple[str, object]] = [("", document)]
    # Iterative: the walk must not depend on the parser's nesting limit to stay on the stack.
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            check(value, field=path or "the body")
        elif isinstance(value, dict):
            for key, item in value.items():
                name = str(key)
                check(name, field=f"a key in {path or 'the body'}")
                stack.append((f"{path}.{name}" if path else name, item))
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", item) for i, item in enumerate(value))
