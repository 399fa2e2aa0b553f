"""Cold start: from "deploy" to ``/v2/health/ready``, for the wolt-jupyter local target and MLServer 1.7.1.

    .venv/bin/python benchmarks/cold_start.py [--rounds 3] [--mlserver-venv /path/to/venv]

Models: three 20-feature LogisticRegressions registered in a throwaway MLflow SQLite store (and the first one
dumped with joblib for MLServer). Scenarios, alternated within each round:

- ``wolt-3``: ``wolt_jupyter.deploy(name, v1, ab=[v2=10], shadow=[v3])`` — A/B + shadow, three models, timed
  from the call to its return (it returns when the deployment is ready), in a process that has already
  imported wolt_jupyter and MLflow (as a notebook kernel has); includes pinning aliases, the variants-fit
  check, the revision record, starting the supervisor and the runtime, loading the three models
- ``wolt-1``: the same with one variant
- ``wolt-runtime-1``: ``python -m wolt_jupyter.serving --spec …`` started by hand, one variant (the MLflow
  model directory of version 1 on disk, as MLServer is given its model's files), to ready: the same thing
  MLServer's number measures (a process start and one model load)
- ``mlserver-1``: ``mlserver start DIR`` (mlserver-sklearn, the joblib file) to ``/v2/models/bench/ready``
- ``mlserver-mlflow-1``: the same with mlserver-mlflow on the MLflow model directory of version 1 (the model
  the wolt runtime loads; MLflow saves scikit-learn models with skops, whose import alone imports every
  scikit-learn estimator), when that runtime is installed in the MLServer venv

Targets (issue 11): wolt-3 <= 3 s; wolt-runtime-1 <= mlserver-1 in the same round. The machine is shared:
each line says the 1-minute load average when it was measured and the CPU seconds the start used (the
process tree at ready; for a deploy, the kernel's part too), which a busy machine does not inflate; ratios
are quoted within a round.

What makes the difference is in the documentation site's serving runtime page ("Cold start"): scikit-learn
models load without MLflow (``serving.flavors``) and plain estimators' skops files without ``skops.io``
(``serving.skops_format``); the kernel copies the pinned versions into the runtime's model cache before
starting it.

Results: a dated Markdown file (``--out-md PATH``; by default ``docs/benchmarks/results/<date>-cold-start.md``,
``--out-md -`` prints it instead), listed on the documentation site's benchmarks page with the earlier runs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from _proc import tree_cpu  # noqa: E402
from _results import write_result  # noqa: E402
from _serving_peers import mlserver_settings  # noqa: E402
from serving import free_port, stop, wait_ready  # noqa: E402

N_FEATURES = 20

# run in a fresh interpreter per measurement: imports first (a notebook kernel has them), then the clock
DEPLOY = """
import json, sys, time
import mlflow.pyfunc, wolt_jupyter
from wolt_jupyter import deployments
from wolt_jupyter.deployments import revision_store
sys.path.insert(0, sys.argv[2])
from _proc import tree_cpu
wolt_jupyter.models("cold")  # a kernel that registered the model has the registry open
variants = int(sys.argv[1])
ab = ["models:/cold/2=10"] if variants == 3 else []
shadow = ["models:/cold/3"] if variants == 3 else []
t0, c0 = time.perf_counter(), time.process_time()
d = deployments.deploy("cold", "models:/cold@champion", ab=ab, shadow=shadow)
took, kernel = time.perf_counter() - t0, time.process_time() - c0
assert d.status == "ready", d.status
cpu = kernel + tree_cpu(int(revision_store().record("cold").extra["pid"]))  # + the supervisor and its runtime
deployments.undeploy("cold")
print(json.dumps({"seconds": took, "cpu": cpu}))
"""


def prepare(root: Path) -> dict[str, Any]:
    import joblib
    import mlflow
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.chdir(root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    cols = [f"f{i}" for i in range(N_FEATURES)]
    x = pd.DataFrame(np.random.default_rng(0).normal(size=(500, N_FEATURES)), columns=cols)
    first = None
    for seed in (1, 2, 3):
        y = (x.to_numpy() @ np.random.default_rng(seed).normal(size=N_FEATURES) > 0).astype("int64")
        m = LogisticRegression(max_iter=500).fit(x, y)
        first = first or m
        with mlflow.start_run():
            mlflow.sklearn.log_model(
                m, name="model", registered_model_name="cold", signature=infer_signature(x, m.predict(x)),
                input_example=x.head(2), pip_requirements=[],
            )  # fmt: skip
    mlflow.MlflowClient().set_registered_model_alias("cold", "champion", "1")
    joblib.dump(first, root / "model.joblib")
    local = mlflow.artifacts.download_artifacts("models:/cold/1", dst_path=str(root / "mlflow-model"))
    return {"uri": uri, "joblib": root / "model.joblib", "model_dir": local}


def load_average() -> float:
    return os.getloadavg()[0]


def measure(kind: str, root: Path, prep: dict[str, Any], args: argparse.Namespace) -> tuple[float, float]:
    """(seconds to ready, CPU seconds the start used)."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": prep["uri"], "PYTHONPATH": str(REPO)}
    env["WOLT_JUPYTER_HOME"] = str(root / f"home-{kind}")
    if kind in ("wolt-3", "wolt-1"):
        out = subprocess.run(
            [sys.executable, "-c", DEPLOY, kind[-1], str(HERE)], env=env, capture_output=True, text=True,
            cwd=root,
        )  # fmt: skip
        if out.returncode != 0:
            raise RuntimeError(f"{kind} failed:\n{out.stderr[-3000:]}")
        got = json.loads(out.stdout.strip().splitlines()[-1])
        return got["seconds"], got["cpu"]
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    if kind == "wolt-runtime-1":
        # the MLflow model directory of version 1, as MLServer is given its files and as a deploy hands the
        # runtime the pinned version (the kernel copies it into the runtime's model cache)
        model = str(prep["model_dir"])
        spec = {"name": "cold", "variants": [{"name": "main", "model": model, "traffic": 100}]}
        (root / "spec.json").write_text(json.dumps(spec))
        state = root / "state-runtime"
        shutil.rmtree(state, ignore_errors=True)
        cmd = [
            sys.executable,
            "-m",
            "wolt_jupyter.serving",
            "--spec",
            str(root / "spec.json"),
            "--port",
            str(port),
        ]
        cmd += ["--state-dir", str(state), "--log-level", "WARNING"]
        ready = f"{base}/v2/health/ready"
    else:  # mlserver-1, mlserver-mlflow-1
        mdir = root / kind
        (mdir / "bench").mkdir(parents=True, exist_ok=True)
        conf = mlserver_settings(str(mdir), str(prep["joblib"]), port, free_port())
        if kind == "mlserver-mlflow-1":  # the same MLflow model directory the wolt runtime loads
            conf["model"]["implementation"] = "mlserver_mlflow.MLflowRuntime"
            conf["model"]["parameters"] = {"uri": prep["model_dir"]}
        conf["settings"]["metrics_port"] = free_port()
        (mdir / "settings.json").write_text(json.dumps(conf["settings"]))
        (mdir / "bench" / "model-settings.json").write_text(json.dumps(conf["model"]))
        cmd = [str(Path(args.mlserver_venv) / "bin" / "mlserver"), "start", str(mdir)]
        env["PATH"] = f"{Path(args.mlserver_venv) / 'bin'}{os.pathsep}{env['PATH']}"
        ready = f"{base}/v2/models/bench/ready"
    log = open(root / f"{kind}.log", "ab")  # noqa: SIM115 - closed with the process
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=root
    )
    try:
        wait_ready(ready, proc, poll=0.02)
        return time.perf_counter() - t0, tree_cpu(proc.pid)
    finally:
        stop(proc)
        log.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mlserver-venv", default=os.environ.get("MLSERVER_VENV"))
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="subset of: wolt-3 wolt-1 wolt-runtime-1 mlserver-1 mlserver-mlflow-1",
    )
    p.add_argument(
        "--out-md",
        default=None,
        help="the dated result file (default docs/benchmarks/results/<date>-cold-start.md; '-' prints it)",
    )
    args = p.parse_args()
    kinds = args.only or ["wolt-3", "wolt-1", "wolt-runtime-1", "mlserver-1", "mlserver-mlflow-1"]
    venv = Path(args.mlserver_venv) if args.mlserver_venv else None
    if venv is None or not (venv / "bin" / "mlserver").exists():
        print("skipping MLServer: pass --mlserver-venv (a venv with mlserver==1.7.1 mlserver-sklearn==1.7.1)")
        kinds = [k for k in kinds if not k.startswith("mlserver")]
    elif "mlserver-mlflow-1" in kinds and not list(venv.glob("lib/python*/site-packages/mlserver_mlflow")):
        print("skipping mlserver-mlflow-1: install mlserver-mlflow==1.7.1 in the MLServer venv")
        kinds.remove("mlserver-mlflow-1")
    root = Path(tempfile.mkdtemp(prefix="wolt-cold-"))
    rows: list[list[Any]] = []
    lines: list[str] = []
    try:
        prep = prepare(root)
        for r in range(args.rounds):
            by: dict[str, float] = {}
            cpu: dict[str, float] = {}
            order = kinds if r % 2 == 0 else list(reversed(kinds))
            for kind in order:
                la = load_average()
                by[kind], cpu[kind] = measure(kind, root, prep, args)
                rows.append([r, kind, by[kind], cpu[kind], la])
                print(
                    f"round {r}  {kind:17s} {by[kind]:6.2f} s  cpu {cpu[kind]:5.2f} s  (load average {la:.1f})",
                    flush=True,
                )
            parts = []
            if "wolt-3" in by:
                parts.append(f"wolt-3 {by['wolt-3']:.2f} s (target <= 3)")
            if "wolt-runtime-1" in by and "mlserver-1" in by:
                parts.append(
                    f"wolt-runtime-1/mlserver-1 {by['wolt-runtime-1'] / by['mlserver-1']:.2f}x (target <= 1)"
                )
            if "wolt-1" in by and "mlserver-1" in by:
                parts.append(f"wolt-1/mlserver-1 {by['wolt-1'] / by['mlserver-1']:.2f}x")
            for wolt in ("wolt-3", "wolt-1", "wolt-runtime-1"):
                if wolt in by and "mlserver-mlflow-1" in by:
                    parts.append(f"{wolt}/mlserver-mlflow-1 {by[wolt] / by['mlserver-mlflow-1']:.2f}x")
            print(f"round {r}  -> " + "; ".join(parts), flush=True)
            lines.append(f"- round {r}: " + "; ".join(parts))
            if "mlserver-1" in cpu:
                cpu_parts = [
                    f"{k}/mlserver-1 {cpu[k] / cpu['mlserver-1']:.2f}x" for k in cpu if k != "mlserver-1"
                ]
                print(f"round {r}  -> CPU: " + "; ".join(cpu_parts), flush=True)
                lines.append(f"- round {r}, CPU: " + "; ".join(cpu_parts))
        write_result(
            "cold-start",
            "Cold start: deploy to ready",
            ["round", "scenario", "seconds to ready", "CPU seconds", "load average before"],
            rows,
            notes="Scenarios alternate within each round; ratios only within a round. CPU seconds: the process "
            "tree at ready (for a deploy, the kernel's part too), which a busy machine does not inflate.\n\n"
            "Same-round ratios:\n\n" + "\n".join(lines),
            out=args.out_md,
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
