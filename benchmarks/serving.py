"""Serving benchmark: the wolt-jupyter runtime against MLServer 1.7.1 and a raw asyncio V2 server.

    .venv/bin/python benchmarks/serving.py [--duration 10] [--rounds 2] [--mlserver-venv /path/to/venv]

Model: a 20-feature LogisticRegression registered in a throwaway MLflow SQLite store. Load: ``wrk`` (Debian)
with 16 keep-alive connections, 1-row V2 JSON requests. Each server is pinned to CPU 0 and wrk to CPU 1
(``taskset``); servers alternate within each round and ratios are quoted within a round. Scenarios:

- ``wolt-ab``: 90/10 split, one shadow, response log on (SQLite) — the issue's headline configuration
- ``wolt-single``: one variant, response log off
- ``raw``: asyncio.Protocol + json + predict, nothing else (the floor)
- ``mlserver``: MLServer 1.7.1 + mlserver-sklearn, adaptive batching (16, 2 ms), parallel_workers 0

Targets (issue 3): wolt-ab rps >= 2x MLServer and p99 <= 1/2 of MLServer's; wolt-single >= 0.7x raw.
For diagnosis, ``--only wolt-ab-nolog wolt-ab-noshadow`` drop the response log or the shadow;
``--only wolt-ab wolt-ab-nospool`` measures what the crash-safe spool costs (goal: <= 10 % of wolt-ab's rps).

Results: a dated Markdown file (``--out-md PATH``; by default ``docs/benchmarks/results/<date>-serving.md``,
``--out-md -`` prints it instead), listed on the documentation site's benchmarks page with the earlier runs.

The wolt runtime beats the raw server because concurrent requests are micro-batched into one predict.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
from _proc import tree, tree_cpu  # noqa: E402
from _results import write_result  # noqa: E402
from _serving_peers import mlserver_settings  # noqa: E402

from wolt_jupyter.processes import stop_process_group  # noqa: E402

N_FEATURES = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prepare(root: Path, rows: int = 1) -> dict[str, Any]:
    """Train and register two versions; also dump v1 with joblib for MLServer and the raw server."""
    import joblib
    import mlflow
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import LogisticRegression

    uri = f"sqlite:///{root / 'mlflow.db'}"
    os.chdir(root)  # MLflow puts artifacts under ./mlruns: keep them in the temp dir
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    rng = np.random.default_rng(0)
    cols = [f"f{i}" for i in range(N_FEATURES)]
    x = pd.DataFrame(rng.normal(size=(2000, N_FEATURES)), columns=cols)
    models = []
    for seed in (1, 2):
        w = np.random.default_rng(seed).normal(size=N_FEATURES)
        y = (x.to_numpy() @ w > 0).astype("int64")
        m = LogisticRegression(max_iter=500).fit(x, y)
        models.append(m)
        with mlflow.start_run():
            mlflow.sklearn.log_model(
                m, name="model", registered_model_name="bench-lr", signature=infer_signature(x, m.predict(x)),
                pip_requirements=[],
            )  # fmt: skip
    joblib_path = root / "model.joblib"
    joblib.dump(models[0], joblib_path)
    body = {
        "inputs": [
            {
                "name": "input-0",
                "shape": [rows, N_FEATURES],
                "datatype": "FP64",
                "data": x.iloc[:rows].to_numpy().tolist(),
            }
        ]
    }
    (root / "body.json").write_text(json.dumps(body))
    return {"uri": uri, "joblib": joblib_path, "body": root / "body.json"}


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120, poll: float = 0.2) -> None:
    """Until ``url`` answers 200; ``poll`` is the resolution (the cold-start benchmark measures to 20 ms)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(poll)
    raise RuntimeError(f"{url} not ready in {timeout}s")


def start(
    kind: str, root: Path, prep: dict[str, Any], args: argparse.Namespace, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen, str, str]:
    """Start one server pinned to CPU 0; returns (process, infer URL, ready URL). ``KIND@REF``: a wolt
    runtime with the package as it was at git revision REF (the same run compares before and after);
    ``extra``: more arguments for a wolt runtime."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    kind, _, ref = kind.partition("@")
    src = tree(ref, root) if ref else REPO
    env = {**os.environ, "MLFLOW_TRACKING_URI": prep["uri"], "PYTHONPATH": str(src)}
    log = open(root / f"{kind}.log", "ab")  # noqa: SIM115 - closed with the process
    pin = ["taskset", "-c", args.server_cpu]
    if kind.startswith("wolt"):
        variants = [{"name": "main", "model": "models:/bench-lr/1", "traffic": 100}]
        if kind.startswith("wolt-ab"):  # wolt-ab, and for diagnosis wolt-ab-nolog, -noshadow, -nospool
            variants = [
                {"name": "main", "model": "models:/bench-lr/1", "traffic": 90},
                {"name": "challenger", "model": "models:/bench-lr/2", "traffic": 10},
                {"name": "shadow", "model": "models:/bench-lr/2", "shadow": True},
            ][: 2 if kind == "wolt-ab-noshadow" else 3]
        logging_on = kind in ("wolt-ab", "wolt-ab-noshadow", "wolt-ab-nospool", "wolt-ab-nofsync")
        if kind == "wolt-ab-nospool":  # the response log kept in memory only: what the spool costs
            env["WOLT_RESPONSE_SPOOL"] = "0"
        if kind == "wolt-ab-nofsync":  # spooled, never fsynced: what the fsync costs
            env["WOLT_SPOOL_FSYNC_S"] = "-1"
        spec = {"name": "bench", "variants": variants, "logging": {"responses": logging_on}}
        spec_path = root / f"{kind}{ref and '@'}{ref}.yaml".replace("/", "_")
        spec_path.write_text(json.dumps(spec))  # JSON is YAML
        state = root / f"state-{kind}{ref and '@'}{ref}".replace("/", "_")
        if state.exists():
            shutil.rmtree(state)
        cmd = [sys.executable, "-m", "wolt_jupyter.serving", "--spec", str(spec_path), "--port", str(port)]
        cmd += ["--state-dir", str(state), "--log-level", "WARNING", *extra]
        ready = f"{base}/v2/health/ready"
        infer = f"{base}/v2/models/bench/infer"
    elif kind == "raw":
        cmd = [
            sys.executable,
            str(HERE / "_serving_peers.py"),
            "raw",
            "--model",
            str(prep["joblib"]),
            "--port",
            str(port),
        ]
        ready, infer = base + "/", f"{base}/v2/models/bench/infer"
    elif kind == "mlserver":
        mdir = root / "mlserver"
        (mdir / "bench").mkdir(parents=True, exist_ok=True)
        conf = mlserver_settings(str(mdir), str(prep["joblib"]), port, free_port())
        conf["settings"]["metrics_port"] = free_port()
        (mdir / "settings.json").write_text(json.dumps(conf["settings"]))
        (mdir / "bench" / "model-settings.json").write_text(json.dumps(conf["model"]))
        cmd = [str(Path(args.mlserver_venv) / "bin" / "mlserver"), "start", str(mdir)]
        env["PATH"] = f"{Path(args.mlserver_venv) / 'bin'}{os.pathsep}{env['PATH']}"
        ready, infer = f"{base}/v2/models/bench/ready", f"{base}/v2/models/bench/infer"
    else:
        raise ValueError(kind)
    proc = subprocess.Popen(pin + cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    wait_ready(ready, proc)
    return proc, infer, ready


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        stop_process_group(proc.pid, 30)
        proc.wait(5)


LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local f = io.open(os.getenv("WRK_BODY"), "r")
wrk.body = f:read("*a")
f:close()
"""


def _ms(value: str) -> float:
    num, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", value).groups()
    return float(num) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def load(url: str, root: Path, body: Path, args: argparse.Namespace, duration: float) -> dict[str, float]:
    script = root / "post.lua"
    script.write_text(LUA)
    cmd = [
        "taskset",
        "-c",
        args.client_cpu,
        "wrk",
        "-t1",
        f"-c{args.connections}",
        f"-d{max(1, round(duration))}s",
        "--latency",
    ]
    out = subprocess.run(
        [*cmd, "-s", str(script), url],
        capture_output=True,
        text=True,
        env={**os.environ, "WRK_BODY": str(body)},
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = _ms(re.search(r"\s50%\s+(\S+)", out).group(1))
    p99 = _ms(re.search(r"\s99%\s+(\S+)", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors:.*", out)
    return {"rps": rps, "p50_ms": p50, "p99_ms": p99, "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(0) if errors else ""}  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--client-cpu", default="1")
    p.add_argument("--mlserver-venv", default=os.environ.get("MLSERVER_VENV"))
    p.add_argument(
        "--only",
        nargs="*",
        default=None,
        help="subset of: wolt-ab wolt-single raw mlserver; KIND@REF: a wolt kind at git revision REF",
    )
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument(
        "--out-md",
        default=None,
        help="the dated result file (default docs/benchmarks/results/<date>-serving.md; '-' prints it)",
    )
    p.add_argument("--rows", type=int, default=1, help="rows per request (throughput is quoted in rows/s)")
    args = p.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is needed: apt-get install -y wrk")
    kinds = args.only or ["wolt-ab", "wolt-single", "raw", "mlserver"]
    if "mlserver" in kinds and not (
        args.mlserver_venv and (Path(args.mlserver_venv) / "bin" / "mlserver").exists()
    ):
        print("skipping mlserver: pass --mlserver-venv (a venv with mlserver==1.7.1 mlserver-sklearn==1.7.1)")
        kinds.remove("mlserver")
    root = Path(tempfile.mkdtemp(prefix="wolt-bench-"))
    prep = prepare(root, args.rows)
    # the kernel writes back what preparing dirtied (MLflow's store, artifacts) in the first seconds after:
    # measured, the first server of a run lost ~15 % to it, whichever it was
    os.sync()
    time.sleep(3)
    results: list[dict[str, Any]] = []
    for rnd in range(args.rounds):
        order = kinds if rnd % 2 == 0 else kinds[::-1]
        for kind in order:
            proc, url, _ = start(kind, root, prep, args)
            try:
                load(url, root, prep["body"], args, args.warmup)
                cpu = tree_cpu(proc.pid)
                r = load(url, root, prep["body"], args, args.duration)
                cpu = tree_cpu(proc.pid) - cpu
            finally:
                stop(proc)
            # CPU the server spent per request: steadier than rps on a machine shared with other work
            cpu_us = cpu / max(1.0, r["rps"] * max(1, round(args.duration))) * 1e6
            r.update(server=kind, round=rnd, rows=args.rows, rows_per_s=r["rps"] * args.rows, cpu_us=cpu_us)
            results.append(r)
            print(f"round {rnd} {kind:12s} {r['rps']:9.0f} rps {r['rows_per_s']:9.0f} rows/s  p50 {r['p50_ms']:6.2f} ms  p99 {r['p99_ms']:6.2f} ms  cpu {cpu_us:6.1f} us/req"
                  f"  non-2xx {r['non_2xx']} {r['socket_errors']}", flush=True)  # fmt: skip
    print("\nsame-round ratios:")
    lines = []
    for rnd in range(args.rounds):
        by = {r["server"]: r for r in results if r["round"] == rnd}
        parts = []
        if "wolt-ab" in by and "mlserver" in by:
            parts.append(
                f"wolt-ab/mlserver rows/s {by['wolt-ab']['rps'] / by['mlserver']['rps']:.2f}x (target >= 2)"
            )
            parts.append(f"p99 {by['wolt-ab']['p99_ms'] / by['mlserver']['p99_ms']:.2f}x (target <= 0.5)")
        if "wolt-single" in by and "raw" in by:
            parts.append(
                f"wolt-single/raw rps {by['wolt-single']['rps'] / by['raw']['rps']:.2f}x (target >= 0.7)"
            )
        for server in by:  # this tree against the same kind at another revision (KIND@REF)
            kind, _, ref = server.partition("@")
            if ref and kind in by:
                parts.append(
                    f"{kind}/{server} rps {by[kind]['rps'] / by[server]['rps']:.2f}x, "
                    f"CPU per request {by[kind]['cpu_us'] / by[server]['cpu_us']:.2f}x"
                )
        print(f"  round {rnd}: " + "; ".join(parts))
        lines.append(f"- round {rnd}: " + "; ".join(parts))
    write_result(
        "serving",
        f"Serving throughput, {args.rows}-row requests",
        ["round", "server", "rps", "rows/s", "p50 ms", "p99 ms", "server CPU µs/request", "non-2xx"],
        [
            [
                r["round"],
                r["server"],
                round(r["rps"]),
                round(r["rows_per_s"]),
                r["p50_ms"],
                r["p99_ms"],
                round(r["cpu_us"], 1),
                r["non_2xx"],
            ]
            for r in results
        ],
        notes=f"{args.connections} keep-alive connections from `wrk`, {args.duration:g} s per server after a "
        f"{args.warmup:g} s warm-up; servers pinned to CPU {args.server_cpu}, wrk to CPU {args.client_cpu}; "
        "servers alternate within a round.\n\nSame-round ratios:\n\n" + "\n".join(lines),
        out=args.out_md,
    )
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
