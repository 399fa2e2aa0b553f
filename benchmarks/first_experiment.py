"""How long a data scientist waits for the first ``%%wolt_experiment`` in a fresh state dir, and the next ones.

Each round is a new Python process with a real IPython shell and an empty ``WOLT_JUPYTER_HOME``: it loads the
extension, runs the quickstart's experiment cell (imports scikit-learn, fits a small pipeline, autologged), then
the same cell twice more, then registers the model. Times are wall-clock from the cell's start to its card,
and the CPU time of the kernel process (which a busy machine inflates far less than the wall-clock time;
MLflow's requirement inference runs in a subprocess, so its CPU is not in the kernel's).

    python benchmarks/first_experiment.py [--rounds 3] [--infer-requirements]
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
print(json.dumps(times))
"""


def one_round(flags: str) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "WOLT_JUPYTER_HOME": home}
        env.pop("MLFLOW_TRACKING_URI", None)
        code = f"CELL = {CELL!r}\n{ROUND}"
        out = subprocess.run(
            [sys.executable, "-c", code, flags], env=env, capture_output=True, text=True, check=True
        )
        return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--infer-requirements", action="store_true", help="MLflow's requirement inference")
    args = parser.parse_args()
    flags = "--infer-requirements" if args.infer_requirements else ""
    rounds = [one_round(flags) for _ in range(args.rounds)]
    load = os.getloadavg()[0]
    print(f"{args.rounds} rounds, load average {load:.1f} on {os.cpu_count()} cores, {flags or 'defaults'}")
    for key in rounds[0]:
        wall = [r[key][0] for r in rounds]
        cpu = [r[key][1] for r in rounds]
        print(
            f"  {key:14s} wall median {statistics.median(wall):6.2f} s ({', '.join(f'{v:.2f}' for v in wall)})"
            f"   cpu median {statistics.median(cpu):6.2f} s"
        )


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    main()
