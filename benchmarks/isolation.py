"""Isolation benchmark: main's latency alone, beside a 0.3 s challenger at 10 %, and beside a hung one (issue 25).

    .venv/bin/python benchmarks/isolation.py [--rate 500] [--duration 10] [--rounds 2] [--repo DIR]
                                             [--switch-interval 0.005 0.001] [--out-md PATH]

Model: ``serving.py``'s 20-feature LogisticRegression as ``main``; challengers are pyfunc models with the same
signature: ``slow`` sleeps 0.3 s per predict, ``hung`` answers the load probe and then never returns. Load: an
open-loop asyncio client (pinned to CPU 1; the runtime to CPU 0) sending 1-row V2 requests at ``--rate`` per
second over keep-alive connections, a new one whenever all are busy (up to 256), so a stuck request does not
hold back the ones after it. Main's latency counts the requests the split sent to main (``x-wolt-variant: main``
without ``x-wolt-retried-from``). Scenarios, alternating within a round; ratios are quoted within a round:

- ``alone``: main at 100 %
- ``slow``: main 90 %, ``slow`` 10 % (no timeout: every one of its requests waits its 0.3 s)
- ``hung``: main 90 %, ``hung`` 10 % with ``timeout: 1`` (its requests go to main after 1 s; after four hung
  threads it is skipped and they go to main at once)

``--repo`` runs another checkout's runtime (e.g. the code before the change; ``hung`` is then skipped: it
stops that runtime). ``--switch-interval`` runs each scenario once per value of ``sys.setswitchinterval``
(``WOLT_SWITCH_INTERVAL_S``).

Results: a dated Markdown file (``--out-md PATH``; by default ``docs/benchmarks/results/<date>-isolation.md``,
``--out-md -`` prints it), listed on the documentation site's benchmarks page.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import serving as bench  # noqa: E402 - the serving benchmark's model, readiness wait and stop
from _results import write_result  # noqa: E402

SLOW_S = 0.3
SCENARIOS = ("alone", "slow", "hung")


def prepare(root: Path) -> dict[str, Any]:
    """``serving.py``'s models, plus the slow and the hung challenger (pickled by value: the runtime needs no
    benchmark code)."""
    prep = bench.prepare(root)
    import mlflow
    import mlflow.pyfunc
    import numpy as np
    import pandas as pd
    from mlflow.models import infer_signature

    class Slow(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            time.sleep(SLOW_S)
            return np.zeros(len(model_input), dtype=np.int64)

    class Hung(mlflow.pyfunc.PythonModel):
        def __init__(self):
            self.calls = 0

        def predict(self, context, model_input, params=None):
            self.calls += 1
            if self.calls > 1:  # the first is the runtime's probe at load
                threading.Event().wait()
            return np.zeros(len(model_input), dtype=np.int64)

    cols = [f"f{i}" for i in range(bench.N_FEATURES)]
    x = pd.DataFrame(np.zeros((4, bench.N_FEATURES)), columns=cols)
    sig = infer_signature(x, np.zeros(4, dtype=np.int64))
    for name, model in (("bench-slow", Slow()), ("bench-hung", Hung())):
        with mlflow.start_run():
            mlflow.pyfunc.log_model(
                name="model",
                python_model=model,
                registered_model_name=name,
                signature=sig,
                pip_requirements=[],
            )
    return prep


def spec(scenario: str) -> dict[str, Any]:
    main = {"name": "main", "model": "models:/bench-lr/1", "traffic": 100}
    variants = {
        "alone": [main],
        "slow": [{**main, "traffic": 90}, {"name": "slow", "model": "models:/bench-slow/1", "traffic": 10}],
        "hung": [
            {**main, "traffic": 90},
            {"name": "hung", "model": "models:/bench-hung/1", "traffic": 10, "timeout": 1.0},
        ],
    }[scenario]
    return {"name": "bench", "variants": variants, "logging": {"responses": False}}


def start(scenario: str, root: Path, prep: dict[str, Any], args: argparse.Namespace, switch: str | None):
    port = bench.free_port()
    spec_path = root / f"{scenario}.yaml"
    spec_path.write_text(json.dumps(spec(scenario)))
    state = root / f"state-{scenario}"
    shutil.rmtree(state, ignore_errors=True)
    env = {**os.environ, "MLFLOW_TRACKING_URI": prep["uri"], "PYTHONPATH": str(args.repo)}
    if switch is not None:
        env["WOLT_SWITCH_INTERVAL_S"] = switch
    cmd = [sys.executable, "-m", "wolt_jupyter.serving", "--spec", str(spec_path), "--port", str(port)]
    cmd += ["--state-dir", str(state), "--log-level", "WARNING"]
    log = open(root / f"{scenario}.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        ["taskset", "-c", args.server_cpu, *cmd], stdout=log, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,
    )  # fmt: skip
    bench.wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", proc)
    return proc, port


class _Pool:
    """Keep-alive connections: an idle one, a new one while fewer than ``limit`` are open, else the next to
    come back (the server's connection cap is not what is measured)."""

    def __init__(self, port: int, limit: int) -> None:
        self.port, self.limit, self.opened = port, limit, 0
        self.idle: asyncio.Queue = asyncio.Queue()

    async def take(self) -> tuple[Any, Any]:
        if self.idle.empty() and self.opened < self.limit:
            self.opened += 1
            return await asyncio.open_connection("127.0.0.1", self.port)
        return await self.idle.get()


async def _one(pool: _Pool, body: bytes, out: list) -> None:
    """One request; its latency is counted from when it is sent."""
    reader, writer = await pool.take()
    head = (
        f"POST /v2/models/bench/infer HTTP/1.1\r\nHost: b\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    t0 = time.perf_counter()
    writer.write(head + body)
    status_line = await reader.readline()
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        k, _, v = line.decode("latin-1").partition(":")
        headers[k.strip().lower()] = v.strip()
    await reader.readexactly(int(headers.get("content-length", "0")))
    seconds = time.perf_counter() - t0
    out.append((int(status_line.split()[1]), headers.get("x-wolt-variant"), headers.get("x-wolt-retried-from"),
                seconds))  # fmt: skip
    pool.idle.put_nowait((reader, writer))


async def _load(port: int, body: bytes, rate: float, seconds: float, connections: int = 256) -> list:
    pool = _Pool(port, connections)
    out: list = []
    tasks = []
    t_start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        delay = t_start + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(_one(pool, body, out)))
    await asyncio.wait(tasks, timeout=30)
    while not pool.idle.empty():
        pool.idle.get_nowait()[1].close()
    return out


def load(port: int, body: bytes, rate: float, seconds: float) -> list:
    try:
        import uvloop

        return uvloop.run(_load(port, body, rate, seconds))
    except ImportError:
        return asyncio.run(_load(port, body, rate, seconds))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def measure(port: int, body: bytes, args: argparse.Namespace) -> dict[str, Any]:
    """Runs the client pinned to its own CPU (a child of this process), returns main's latencies."""
    code = (
        "import json,sys; sys.path.insert(0, %r); import isolation as b; "
        "open(%r, 'w').write(json.dumps(b.load(%d, open(%r,'rb').read(), %f, %f)))"
    )
    out = {}
    dump = Path(tempfile.mkdtemp(prefix="wolt-iso-client-")) / "answers.json"
    for phase, seconds in (("warmup", args.warmup), ("measure", args.duration)):
        subprocess.run(
            ["taskset", "-c", args.client_cpu, sys.executable, "-c",
             code % (str(HERE), str(dump), port, str(body), args.rate, seconds)],
            check=True,
        )  # fmt: skip
        out[phase] = json.loads(dump.read_text())
    shutil.rmtree(dump.parent, ignore_errors=True)
    answers = out["measure"]
    main = [s for status, v, r, s in answers if status == 200 and v == "main" and r is None]
    return {
        "sent": int(args.rate * args.duration),
        "answered": len(answers),
        "non_200": sum(1 for a in answers if a[0] != 200),
        "retried": sum(1 for a in answers if a[2] is not None),
        "main_n": len(main),
        "main_p50_ms": pct(main, 0.50) * 1000,
        "main_p99_ms": pct(main, 0.99) * 1000,
        "all_p99_ms": pct([a[3] for a in answers], 0.99) * 1000,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rate", type=float, default=500, help="requests per second (open loop)")
    p.add_argument("--duration", type=float, default=10)
    p.add_argument("--warmup", type=float, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--server-cpu", default="0")
    p.add_argument("--client-cpu", default="1")
    p.add_argument("--repo", type=Path, default=bench.REPO, help="the checkout whose runtime is measured")
    p.add_argument("--only", nargs="*", default=list(SCENARIOS), choices=SCENARIOS)
    p.add_argument("--switch-interval", nargs="*", default=[None], help="sys.setswitchinterval values")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.add_argument("--out-md", default=None, help="the dated result file (default docs/benchmarks/results/)")
    args = p.parse_args()
    args.repo = args.repo.resolve()
    scenarios = list(args.only)
    if args.repo != bench.REPO.resolve() and "hung" in scenarios:
        print("skipping hung for --repo: a runtime that predicts on its event loop stops at the first one")
        scenarios.remove("hung")
    root = Path(tempfile.mkdtemp(prefix="wolt-iso-bench-"))
    prep = prepare(root)
    os.sync()
    time.sleep(3)
    results = []
    for rnd in range(args.rounds):
        order = scenarios if rnd % 2 == 0 else scenarios[::-1]
        for switch in args.switch_interval:
            for scenario in order:
                proc, port = start(scenario, root, prep, args, switch)
                try:
                    r = measure(port, prep["body"], args)
                finally:
                    bench.stop(proc)
                r.update(scenario=scenario, round=rnd, switch_interval=switch, rate=args.rate)
                results.append(r)
                print(f"round {rnd} switch {switch or 'default':7s} {scenario:6s} main p50 {r['main_p50_ms']:7.2f} ms"
                      f"  p99 {r['main_p99_ms']:8.2f} ms  (n={r['main_n']})  answered {r['answered']}/{r['sent']}"
                      f"  non-200 {r['non_200']}  retried {r['retried']}", flush=True)  # fmt: skip
    for r in results:
        alone = next(
            (a for a in results if a["scenario"] == "alone" and a["round"] == r["round"]
             and a["switch_interval"] == r["switch_interval"]), None,
        )  # fmt: skip
        r["p99_vs_alone"] = r["main_p99_ms"] / alone["main_p99_ms"] if alone else float("nan")
    summary = []
    for switch in args.switch_interval:
        for scenario in scenarios:
            mine = [r for r in results if r["scenario"] == scenario and r["switch_interval"] == switch]
            p99s = sorted(r["main_p99_ms"] for r in mine)
            ratios = sorted(r["p99_vs_alone"] for r in mine)
            summary.append(
                f"- switch interval {switch or 'default'}, {scenario}: main's p99 median "
                f"{statistics.median(p99s):.2f} ms (range {p99s[0]:.2f}-{p99s[-1]:.2f}), against alone median "
                f"{statistics.median(ratios):.2f}x (range {ratios[0]:.2f}-{ratios[-1]:.2f}x)"
            )
    print("\n".join(summary))
    write_result(
        "isolation",
        "Variant isolation: main's latency beside a slow and a hung challenger",
        ["round", "switch interval", "scenario", "main p50 ms", "main p99 ms", "p99 / alone", "main n",
         "answered", "non-200", "retried on main"],
        [[r["round"], r["switch_interval"] or "default", r["scenario"], r["main_p50_ms"], r["main_p99_ms"],
          r["p99_vs_alone"], r["main_n"], f"{r['answered']}/{r['sent']}", r["non_200"], r["retried"]]
         for r in results],
        notes=f"Open loop, {args.rate:g} 1-row requests/s for {args.duration:g} s after a {args.warmup:g} s "
        f"warm-up; runtime pinned to CPU {args.server_cpu}, client to CPU {args.client_cpu}; scenarios "
        f"alternate within a round. Runtime from `{args.repo}`. `p99 / alone`: main's p99 against main alone "
        "in the same round and switch interval.\n\nOver the rounds:\n\n" + "\n".join(summary),
        out=args.out_md,
    )  # fmt: skip
    return bench.finish(results, args.out, root)


if __name__ == "__main__":
    sys.exit(main())
