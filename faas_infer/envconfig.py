"""Building a frozen config dataclass from an environment-style mapping, once, at the edge.

Every package's ``Config.from_env(env)`` uses ``parse_fields``: each field present in ``env`` is parsed
by its parser (``str`` when none is given), and a bad value raises the package's own error with the key,
the value and the rule, as ``max_batch_size='x': must be an integer``.
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any, Callable, Mapping


def parse_fields(cls: type, env: Mapping[str, str], parsers: Mapping[str, Callable[[str], Any]],
                 error: type[Exception] = ValueError) -> dict[str, Any]:
    """{field: parsed value} for the fields of dataclass ``cls`` set (non-empty) in ``env``."""
    values: dict[str, Any] = {}
    for f in fields(cls):
        raw = env.get(f.name)
        if raw is None or raw == "":
            continue
        parser = parsers.get(f.name, str)
        try:
            values[f.name] = parser(raw)
        except (TypeError, ValueError) as exc:
            # int()/float() name only the literal: say what the value must be
            reason = {int: "must be a whole number", float: "must be a number"}.get(parser, str(exc))
            prefix = f"{raw!r}: "
            raise error(f"{f.name}={raw!r}: {reason.removeprefix(prefix)}") from None
    return values


def field_docs(cls: type) -> dict[str, str]:
    """{field: the comment lines written just above it in the class body}, for --help texts."""
    import inspect
    import re

    docs: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("# ").strip())
            continue
        match = re.match(r"([a-z_][a-z0-9_]*)\s*:", stripped)
        if match and pending:
            docs[match.group(1)] = " ".join(pending)
        pending = []
    return docs
