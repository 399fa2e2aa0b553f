"""How long a data scientist waits for the first ``%%wolt_experiment`` in a fresh state dir, and the next ones.

Each round is a new Python process with a real IPython shell and an empty ``WOLT_JUPYTER_HOME``: it loads the
extension, runs the quickstart's experiment cell (imports scikit-learn, fits a small pipeline, autologged), then
the same cell twice more, then registers the model. Times are wall-clock from the cell's start to its card,
and the CPU time of the kernel process (which a busy machine inflates far less than the wall-clock time;
MLflow's requirement inference runs in a subprocess, so its CPU is not in the kernel's; ``children`` is the CPU
of the kernel's subprocesses: the plot helper, git). ``plots_wait`` is how long the plots of the three runs
still took after the registration.

    python benchmarks/first_experiment.py [--rounds 3] [--infer-requirements] [--baseline DIR]

``--baseline DIR``: a source tree of an earlier version (``git archive COMMIT | tar -x -C DIR``); its rounds
alternate with this checkout's, so both see the same load, and the ratios are printed.

Measured 2026-11-30 on the shared 2-core development machine, medians, against 12a2b04 (before the plot
helper and the requirement check's skip), wall now / before and kernel CPU now / before:

    load average 1.1-2.0, 3 rounds each
    first         3.76 s /  4.83 s (0.78x)   3.43 s / 4.53 s (0.76x)
    second        0.70 s /  0.68 s (1.03x)   0.35 s / 0.67 s (0.52x)
    third         1.14 s /  0.75 s (1.51x)   0.53 s / 0.67 s (0.79x)
    plot helper   1.48 s of CPU in all (three runs' plots); 0.64 s still to wait after registering

    load average 7.1 (15 min 7.6), 4 rounds each
    first        10.72 s / 14.64 s (0.73x)   4.04 s / 5.49 s (0.74x)
    second        2.41 s /  1.54 s (1.57x)   0.33 s / 0.77 s (0.42x)
    third         3.37 s /  2.48 s (1.36x)   0.60 s / 0.77 s (0.78x)
    plot helper   1.73 s of CPU in all; 1.25 s still to wait after registering

The later experiments' wall time is longer than before when the helper, drawing the previous run's plots,
competes with the kernel for the two cores; their kernel CPU is lower.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CELL = """
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

X, y = load_breast_cancer(return_X_y=True, as_frame=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
"""

ROUND = r"""
import json, sys, time
from IPython.core.interactiveshell import InteractiveShell
flags = sys.argv[1]
times = {}
def timed(key, call):
    t, c = time.perf_counter(), time.process_time()
    out = call()
    times[key] = (time.perf_counter() - t, time.process_time() - c)
    return out
ip = InteractiveShell.instance()
timed("load_ext", lambda: ip.run_line_magic("load_ext", "wolt_jupyter"))
for n in range(3):
    card = timed(f"experiment_{n + 1}", lambda: ip.run_cell_magic("wolt_experiment", "bench " + flags, CELL))
    assert card.status == "FINISHED" and card.models, card
timed("register", lambda: ip.run_line_magic("wolt_register", "--name bench"))
try:  # the classifier plots drawn by the helper process (absent before it existed)
    from wolt_jupyter.autolog_plots import _Helper, wait_for_plots
except ImportError:
    pass
else:
    timed("plots_wait", wait_for_plots)
    if _Helper.proc is not None:
        _Helper.finish(_Helper.proc)
import resource
helper = resource.getrusage(resource.RUSAGE_CHILDREN)  # the plot helper, git, MLflow's subprocesses
times["children"] = (0.0, helper.ru_utime + helper.ru_stime)
print(json.dumps(times))
"""


def one_round(flags: str, source: Path) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "WOLT_JUPYTER_HOME": home, "PYTHONPATH": str(source)}
        env.pop("MLFLOW_TRACKING_URI", None)
        code = f"CELL = {CELL!r}\n{ROUND}"
        out = subprocess.run(
            [sys.executable, "-c", code, flags],
            env=env,
            cwd=home,  # not this checkout: `python -c` imports from its working directory first
            capture_output=True,
            text=True,
            check=True,
        )
        return json.loads(out.stdout.strip().splitlines()[-1])


def summary(label: str, rounds: list[dict[str, list[float]]]) -> dict[str, tuple[float, float]]:
    """Print the medians of ``rounds`` under ``label``; return them by key as (wall, cpu)."""
    medians = {}
    print(label)
    for key in dict.fromkeys(k for r in rounds for k in r):
        wall = [r[key][0] for r in rounds if key in r]
        cpu = [r[key][1] for r in rounds if key in r]
        medians[key] = (statistics.median(wall), statistics.median(cpu))
        print(
            f"  {key:14s} wall median {medians[key][0]:6.2f} s ({', '.join(f'{v:.2f}' for v in wall)})"
            f"   cpu median {medians[key][1]:6.2f} s"
        )
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--infer-requirements", action="store_true", help="MLflow's requirement inference")
    parser.add_argument(
        "--baseline",
        type=Path,
        help="source tree of an earlier version (git archive COMMIT | tar -x -C DIR): rounds alternate with it",
    )
    args = parser.parse_args()
    flags = "--infer-requirements" if args.infer_requirements else ""
    here = Path(__file__).resolve().parent.parent
    rounds, baseline = [], []
    for _ in range(args.rounds):
        if args.baseline:
            baseline.append(one_round(flags, args.baseline))
        rounds.append(one_round(flags, here))
    load = os.getloadavg()
    print(
        f"{args.rounds} rounds, load average {load[0]:.1f} (15 min: {load[2]:.1f}) on {os.cpu_count()} cores, "
        f"{flags or 'defaults'}"
    )
    now = summary(str(here), rounds)
    if args.baseline:
        before = summary(f"baseline {args.baseline}", baseline)
        for key in ("experiment_1", "experiment_2", "experiment_3"):
            print(
                f"  {key}: wall {now[key][0] / before[key][0]:.2f}x, cpu {now[key][1] / before[key][1]:.2f}x"
                " of the baseline's"
            )


if __name__ == "__main__":
    main()
