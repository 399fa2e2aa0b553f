"""Process accounting for the benchmarks, and the package at another revision (standard library only:
imported by timed child scripts too)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def tree(ref: str, root: Path) -> Path:
    """The package as it was at git revision ``ref`` (``git archive`` into ``root``, once): put it first on
    a child's PYTHONPATH to measure before and after in the same run."""
    src = root / f"tree-{ref.replace('/', '_')}"
    if not src.exists():
        src.mkdir(parents=True)
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", ref, "wolt_jupyter"], check=True, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive.stdout, check=True)
    return src


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and every process under it (Linux /proc): what a
    start cost, whatever share of the machine it got."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        todo.extend(children.get(p, []))
    return total
