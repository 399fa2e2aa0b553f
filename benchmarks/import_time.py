"""How long `import wolt_jupyter` and `%load_ext wolt_jupyter` take, and what they drag in.

Each measurement is a fresh interpreter (a cold import is what a user pays once per kernel). The peer is
`import IPython` + shell creation alone, measured in the same run, so the figure that matters is the extra
cost of the extension over a bare shell.

    python benchmarks/import_time.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

HEAVY = ("mlflow", "sklearn", "pandas", "matplotlib", "numpy")

BASELINE = """
import time, json, sys
t0 = time.perf_counter()
from IPython.core.interactiveshell import InteractiveShell
ip = InteractiveShell.instance()
t1 = time.perf_counter()
{extra}
t2 = time.perf_counter()
print(json.dumps({{"shell": t1 - t0, "extra": t2 - t1, "heavy": [m for m in {heavy!r} if m in sys.modules]}}))
"""

CASES = {
    "bare shell": "",
    "import wolt_jupyter": "import wolt_jupyter",
    "%load_ext wolt_jupyter": "ip.run_line_magic('load_ext', 'wolt_jupyter')",
    "import mlflow (for scale)": "import mlflow",
}


def measure(extra: str) -> dict:
    code = BASELINE.format(extra=extra, heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {name: [] for name in CASES}
    for _ in range(args.rounds):  # alternate cases within a round so drift hits all alike
        for name, extra in CASES.items():
            results[name].append(measure(extra))
    bare = statistics.median(r["shell"] for r in results["bare shell"])
    print(f"{'case':28} {'median ms':>10} {'p90 ms':>8} {'vs bare shell':>14}  heavy modules loaded")
    for name, rows in results.items():
        extra = sorted(r["extra"] * 1000 for r in rows)
        med = statistics.median(extra)
        p90 = extra[int(0.9 * (len(extra) - 1))]
        print(
            f"{name:28} {med:10.1f} {p90:8.1f} {med / (bare * 1000):13.1%}  {', '.join(rows[0]['heavy']) or '-'}"
        )
    print(f"\nbare IPython shell creation: {bare * 1000:.1f} ms (median of {args.rounds})")


if __name__ == "__main__":
    main()
