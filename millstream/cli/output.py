"""How commands print results: kubectl-style aligned tables for people, JSON for machines.

Used by the ``topics`` commands (and any command with ``-o``). Tables have upper-case headers
and columns separated by three spaces, as ``kubectl get`` prints them; JSON is one document,
indented, with keys in the broker's own names so scripts can use either source.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns, each as wide as its widest cell; no trailing spaces."""
    cells = [[str(h) for h in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def fields(pairs: Sequence[tuple[str, object]], indent: int = 0) -> str:
    """``Name:   value`` lines, values aligned, as in ``kubectl describe``."""
    if not pairs:
        return ""
    width = max(len(name) for name, _ in pairs) + 1
    pad = " " * indent
    return "\n".join(f"{pad}{name + ':':<{width}}  {value}".rstrip() for name, value in pairs)


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{size}B" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def print_json(document: Any, stream: TextIO | None = None) -> None:
    print(json.dumps(document, indent=2), file=stream or sys.stdout)
