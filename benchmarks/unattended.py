"""Unattended operation, measured: restart after SIGKILL, blue-green redeploy, and the lock's wait.

    .venv/bin/python benchmarks/unattended.py [--kills 5]

A throwaway state dir and embedded MLflow store; a 3-feature LinearRegression registered twice. Reports:

- restart: SIGKILL of the runtime → ``/v2/health/ready`` answers 200 again (the supervisor's fork + model load
  from the deployment's artifact cache), each kill and the median. Kills come 0.5 s apart, so from the second
  on they include the supervisor's back-off for crashes in a row (0.2 s doubling);
- redeploy: ``deploy`` to the other version while serving → returns ready (load beside + check + switch), and
  the switch itself as the runtime logs it (the step on the event loop);
- first deploy: ``deploy`` of a new name → ready (cold start: interpreter, imports, load).

Run on demand (not part of the test suite); quote the numbers with the machine's load.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--kills", type=int, default=5)
    args = p.parse_args()
    os.environ["WOLT_JUPYTER_HOME"] = tempfile.mkdtemp(prefix="wolt-bench-")
    import numpy as np
    import pandas as pd
    from sklearn.linear_model import LinearRegression

    import wolt_jupyter
    from wolt_jupyter import deployments

    from deploy_support import is_ready, runtime_pid

    X = pd.DataFrame(np.random.default_rng(0).normal(size=(50, 3)), columns=["f0", "f1", "f2"])
    for scale in (1.0, 100.0):
        wolt_jupyter.register(LinearRegression().fit(X, X.sum(axis=1) * scale), name="eta", input_example=X)
    home = wolt_jupyter.config.settings().home

    t = time.monotonic()
    d = deployments.deploy("bench", model="models:/eta/1")
    print(f"first deploy: {time.monotonic() - t:.2f} s to ready")

    restarts = []
    for _ in range(args.kills):
        os.kill(runtime_pid(home, "bench"), signal.SIGKILL)
        t = time.monotonic()
        time.sleep(0.01)
        while not is_ready(d.url):
            time.sleep(0.005)
        restarts.append(time.monotonic() - t)
        time.sleep(0.5)
    print(
        "restart after SIGKILL: "
        + ", ".join(f"{r:.2f}" for r in restarts)
        + f" s (median {statistics.median(restarts):.2f})"
    )

    for version in (2, 1, 2):
        t = time.monotonic()
        deployments.deploy("bench", model=f"models:/eta/{version}")
        took = time.monotonic() - t
        log = (home / "deployments" / "bench" / "runtime.log").read_text()
        switch = re.findall(r"loaded in ([\d.]+)s, switch ([\d.]+) us", log)[-1]
        print(
            f"redeploy to v{version}: {took:.2f} s to ready (load+check {switch[0]} s, switch {switch[1]} µs)"
        )
    deployments.undeploy("bench")
    return 0


if __name__ == "__main__":
    sys.exit(main())
