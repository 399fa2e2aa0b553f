"""Fixtures of the serving tests: models registered in a real MLflow store, runtimes as real processes.

Models are trained and registered with MLflow directly (``serving_make_models.py`` in a subprocess, so
MLflow's process-wide tracking URI never leaks into other tests) into a SQLite store under a session temp
dir. Each runtime is ``python -m wolt_jupyter.serving`` on a free port of 127.0.0.1 with
``MLFLOW_TRACKING_URI`` pointing at that store; the shared ones start together and fixtures wait for
``/v2/health/ready``. Helpers live in ``serving_support.py``.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from serving_support import (
    ADMIN,
    DROPS,
    HERE,
    REPO,
    STICKY,
    Runtime,
    Store,
    free_port,
    lr_spec,
    spawn_runtime,
    stop_runtime,
    wait_ready,
)


@pytest.fixture(scope="session")
def model_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """Registered (by serving_make_models.py, in a subprocess): wolt-lr v1/v2 (LogisticRegression, column signature),
    wolt-pipe (selects columns by name), wolt-raises, wolt-sleepy (v1 1 s per predict, v2 0.3 s), wolt-hangs
    (never returns after its first predict) and wolt-strings (a string column, DataFrame output)."""
    import pickle

    root = tmp_path_factory.mktemp("serving-mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)])}
    env.pop("MLFLOW_REGISTRY_URI", None)
    done = subprocess.run(
        [sys.executable, str(HERE / "serving_make_models.py"), str(root)],
        env=env,
        cwd=root,  # MLflow puts artifacts under ./mlruns: keep them in the temp dir
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"registering the test models failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    lr_v1 = pickle.loads((root / "lr_v1.pkl").read_bytes())
    lr_v2 = pickle.loads((root / "lr_v2.pkl").read_bytes())
    pipe = pickle.loads((root / "pipe.pkl").read_bytes())
    return Store(uri, root, lr_v1, lr_v2, pipe)


@pytest.fixture(scope="session")
def runtime_factory(
    model_store: Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., list[Runtime]]]:
    """Start runtimes in parallel (most of the start is importing MLflow: two cores do it side by side)."""
    started: list[Runtime] = []

    def make(*specs: dict[str, Any], extra_args: list[str] = ()) -> list[Runtime]:
        """Each spec may carry ``_args``: command-line arguments for its runtime only."""
        rts = []
        for s in specs:
            spec = {k: v for k, v in s.items() if k != "_args"}
            args = [*extra_args, *s.get("_args", ())]
            rts.append(spawn_runtime(model_store, spec, tmp_path_factory.mktemp(spec["name"]), args))
        started.extend(rts)
        return [wait_ready(rt) for rt in rts]

    yield make
    for rt in started:
        if rt.proc.poll() is None:
            rt.proc.send_signal(signal.SIGTERM)
    for rt in started:
        stop_runtime(rt)


@pytest.fixture(scope="session")
def runtimes(runtime_factory: Callable[..., list[Runtime]]) -> dict[str, Runtime]:
    """The shared runtimes, by deployment name (started together)."""
    ab_args = ["--max-body-bytes", "200000"]
    if importlib.util.find_spec("grpc") is not None:  # grpcio is optional: gRPC tests skip without it
        ab_args += ["--grpc-port", str(free_port())]
    ab_spec = {**lr_spec("ab-test"), "_args": ab_args}
    rts = runtime_factory(ab_spec, STICKY, ADMIN, DROPS)
    return {rt.name: rt for rt in rts}


@pytest.fixture(scope="session")
def ab(runtimes: dict[str, Runtime]) -> Runtime:
    """The A/B runtime: 90/10, a shadow, a broken and a strings variant, response log on, 200 kB body limit,
    gRPC on ``ab.grpc``."""
    return runtimes["ab-test"]


@pytest.fixture(scope="session")
def sticky(runtimes: dict[str, Runtime]) -> Runtime:
    """50/50 sticky on user_id, with a slow shadow and a failing shadow."""
    return runtimes["sticky-test"]


@pytest.fixture(scope="session")
def drops(runtimes: dict[str, Runtime]) -> Runtime:
    """A slow shadow behind a two-item queue: copies must be dropped (and counted), never waited for."""
    return runtimes["drops-test"]


@pytest.fixture(scope="session")
def admin_rt(runtimes: dict[str, Runtime]) -> Runtime:
    """a=100, b=0 and a shadow: the admin tests change its routing."""
    return runtimes["admin-test"]
