"""A benchmark's result as a dated Markdown file for the documentation site (standard library only).

    from _results import write_result
    write_result("serving", "Serving throughput", header, rows, notes=..., out=args.out_md)

The file records when and where it was measured — the date, the machine (cores, CPU model, Python, OS, load
average at the end) and the command line — then the table and the notes. By default it lands in
``docs/benchmarks/results/<date>-<name>.md`` (``-2``, ``-3``, … when that day has one already), which the
site's benchmarks page lists newest first; commit it with the change it measures.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "benchmarks" / "results"


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what :mod:`platform` says, else ``unknown``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> dict[str, str]:
    """What a reader needs to weigh the numbers: cores, CPU model, Python, OS and the load average now."""
    try:
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:  # pragma: no cover - not on Linux/macOS
        load = "unknown"
    return {
        "Cores": str(os.cpu_count()),
        "CPU": cpu_model(),
        "Python": f"{platform.python_implementation()} {platform.python_version()}",
        "OS": platform.platform(terse=True),
        "Load average (1, 5, 15 min)": load,
    }


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            value = f"{value:,.2f}"
        return " ".join(str(value).split()).replace("|", "\\|")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def default_path(name: str, date: dt.date, directory: Path = RESULTS) -> Path:
    """``<date>-<name>.md`` in ``directory``, numbered when that file exists already."""
    path, n = directory / f"{date.isoformat()}-{name}.md", 2
    while path.exists():
        path, n = directory / f"{date.isoformat()}-{name}-{n}.md", n + 1
    return path


def render(
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    notes: str = "",
    argv: Sequence[str] | None = None,
    date: dt.date | None = None,
    script: str | None = None,
) -> str:
    date = date or dt.date.today()
    argv = list(sys.argv if argv is None else argv)
    script = script or (Path(argv[0]).name if argv else "")
    about = [f"- **Date**: {date.isoformat()}"]
    about += [f"- **{key}**: {value}" for key, value in machine().items()]
    about.append(f"- **Command**: `{shlex.join(['python', *argv])}`")
    text = f"# {title}\n\n"
    text += f"Written by `benchmarks/{script}`.\n\n" if script else ""
    text += "\n".join(about) + "\n\n" + markdown_table(header, rows) + "\n"
    if notes.strip():
        text += "\n" + notes.strip() + "\n"
    return text


def write_result(
    name: str,
    title: str,
    header: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    notes: str = "",
    out: str | None = None,
    argv: Sequence[str] | None = None,
    date: dt.date | None = None,
) -> Path | None:
    """Write the result file and return its path. ``out``: a path, ``None`` for :func:`default_path`, or
    ``-`` to print it instead of writing a file (then ``None`` is returned)."""
    date = date or dt.date.today()
    text = render(title, header, rows, notes=notes, argv=argv, date=date)
    if out == "-":
        print(text)
        return None
    path = Path(out) if out else default_path(name, date)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"result written to {path}")
    return path
