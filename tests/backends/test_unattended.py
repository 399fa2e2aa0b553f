"""Deployments that can be left alone: one owner per name, blue-green redeploys, supervision, a response log
that survives SIGKILL, and the CLI a CI job uses. Real runtime processes, real signals, real clients."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest

from deploy_support import (
    Load,
    failures,
    is_ready,
    pid_of,
    processes_serving,
    runtime_pid,
    supervisor_state,
)
from helpers import FEATURES

pytestmark = pytest.mark.usefixtures("undeploy_all")


def _env(home: Path) -> dict[str, str]:
    return {**os.environ, "WOLT_JUPYTER_HOME": str(home)}


def _break(model_uri: str) -> None:
    """The registry still lists the version, but its files are gone: loading it fails."""
    from wolt_jupyter.registry import download_uri

    shutil.rmtree(download_uri(model_uri).removeprefix("file://"))


def test_two_processes_deploying_one_name_leave_one_runtime(models, wolt_home) -> None:
    code = (
        "import sys, wolt_jupyter\n"
        "d = wolt_jupyter.deploy('race', model=sys.argv[1])\n"
        "print(d.status, d.revision, d.url)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, models["v1"]],
            env=_env(wolt_home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-1500:] for _, err in results]
    lines = sorted(out.split() for out, _ in results)
    # both waited their turn: the second found the first's runtime and changed it in place
    assert [ln[:2] for ln in lines] == [["ready", "1"], ["ready", "2"]] and lines[0][2] == lines[1][2]
    serving = processes_serving(wolt_home, "race")  # one supervisor and the runtime it forked
    assert len(serving) == 2 and {m for _, m in serving} == {"wolt_jupyter.serving.supervisor"}
    state = supervisor_state(wolt_home, "race")
    assert {p for p, _ in serving} == {state["supervisor_pid"], state["runtime_pid"]}

    from wolt_jupyter import deployments

    deployments.undeploy("race")
    time.sleep(0.3)
    assert processes_serving(wolt_home, "race") == []


def test_a_held_lock_makes_others_wait_then_fail_naming_the_holder(models, wolt_home) -> None:
    from wolt_jupyter import deployments
    from wolt_jupyter.locking import DeploymentBusy

    deployments.deploy("held", model=models["v1"])
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from wolt_jupyter import deployments\n"
            "with deployments.lock('held', 'a long change'):\n"
            "    print('holding', flush=True); time.sleep(30)\n",
        ],
        env=_env(wolt_home),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "holding"
        os.environ["WOLT_LOCK_TIMEOUT"] = "0.5"
        with pytest.raises(DeploymentBusy) as err:
            deployments.traffic("held", {"main": 100})
        assert f"pid {holder.pid}" in str(err.value) and "a long change" in str(err.value)
    finally:
        os.environ.pop("WOLT_LOCK_TIMEOUT", None)
        holder.kill()
        holder.wait()
    # the kernel released the dead holder's lock: the next change goes through
    assert deployments.traffic("held", {"main": 100}).revision == 2


def test_redeploy_to_a_new_version_under_load_fails_no_request(models, wolt_home) -> None:
    from wolt_jupyter import deployments

    d = deployments.deploy("bg", model=models["v1"])
    sup, rt = pid_of(wolt_home, "bg"), runtime_pid(wolt_home, "bg")
    with Load(d.url, "bg") as load:
        load.wait_for(200)
        t0 = time.monotonic()
        new = deployments.deploy("bg", model=models["v2"])
        switched = time.monotonic()
        n = len(load.outcomes)
        load.wait_for(n + 200)
    outcomes = load.outcomes
    assert failures(outcomes) == [] and len(outcomes) > 400
    assert new.status == "ready" and new.revision == 2 and new.url == d.url
    before = [o for o in outcomes if o.t < t0]
    after = [o for o in outcomes if o.t > switched + 0.05]
    assert before and all(o.value < 2 for o in before)  # v1 answers ~1
    assert after and all(o.value > 50 for o in after)  # v2 answers ~100
    # switched inside the process: nothing restarted
    assert (pid_of(wolt_home, "bg"), runtime_pid(wolt_home, "bg")) == (sup, rt)
    assert "models:/eta/2" in (wolt_home / "deployments" / "bg" / "spec.yaml").read_text()


def test_broken_redeploy_under_load_keeps_the_old_revision_serving(models, wolt_home) -> None:
    from wolt_jupyter import deployments
    from wolt_jupyter.backends.local import DeployFailed

    d = deployments.deploy("keep", model=models["v1"])
    _break(models["v2"])
    with Load(d.url, "keep") as load:
        load.wait_for(100)
        with pytest.raises(DeployFailed) as err:
            deployments.deploy("keep", model=models["v2"])
        n = len(load.outcomes)
        load.wait_for(n + 100)
    assert "keeps serving its current revision" in str(err.value)
    assert "variant 'main' (models:/eta/2) failed to load" in str(err.value)
    assert failures(load.outcomes) == [] and all(o.value < 2 for o in load.outcomes)
    now = deployments.get("keep")
    assert now.status == "ready" and now.revision == 1 and now.variants[0]["model"] == "models:/eta/1"
    # the failed revision keeps its number: revisions only go up
    assert deployments.traffic("keep", {"main": 100}).revision == 3


def test_sigkill_under_load_restarts_and_loses_no_acknowledged_row(models, wolt_home) -> None:
    from wolt_jupyter import deployments

    d = deployments.deploy("crash", model=models["v1"])
    victim = runtime_pid(wolt_home, "crash")
    with Load(d.url, "crash", concurrency=8) as load:
        load.wait_for(1000)
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        while not is_ready(d.url):
            assert time.monotonic() - killed < 60, "not restarted"
            time.sleep(0.02)
        back = time.monotonic() - killed
        n = len(load.outcomes)
        load.wait_for(n + 300)
    acked = {o.id for o in load.outcomes if o.status == 200}
    log = deployments.read_responses("crash")
    missing = acked - set(log["id"])
    print(
        f"restart: ready again {back:.2f} s after SIGKILL; {len(acked)} acknowledged, {len(missing)} missing"
    )
    assert not missing, f"{len(missing)} acknowledged rows lost, e.g. {sorted(missing)[:3]}"
    assert len(log) == len(set(zip(log["id"], log["variant"], strict=True)))  # replay inserted nothing twice
    now = deployments.get("crash")
    assert now.status == "ready" and now.restarts == 1 and now.url == d.url
    assert runtime_pid(wolt_home, "crash") != victim
    table = deployments.deployments().set_index("name")
    assert table.loc["crash", "restarts"] == 1
    assert json.loads((wolt_home / "prometheus" / "targets.json").read_text())[0]["targets"] == [
        d.url.removeprefix("http://")
    ]


def test_a_runtime_that_keeps_crashing_is_reported_failing(models, wolt_home) -> None:
    from wolt_jupyter import deployments

    deployments.deploy("flaky", model=models["v2"])
    _break(
        models["v2"]
    )  # every restart now fails to load: the registry's copy and the runtime's cache are gone
    shutil.rmtree(wolt_home / "deployments" / "flaky" / "models")
    os.kill(runtime_pid(wolt_home, "flaky"), signal.SIGKILL)
    deadline = time.monotonic() + 120
    while supervisor_state(wolt_home, "flaky").get("status") != "failing":
        assert time.monotonic() < deadline, supervisor_state(wolt_home, "flaky")
        time.sleep(0.2)
    d = deployments.get("flaky")
    assert d.status == "failing" and d.restarts >= 3
    assert "exited with status 3" in d.message and "killed by SIGKILL" in d.message
    assert "failed to load" in d.message or "cannot load" in d.message  # the log tail says why
    assert "restarts" in repr(d)


def _undeploy_elsewhere(home: Path, name: str) -> float:
    """Seconds ``undeploy`` takes in another process (its imports not counted)."""
    code = (
        "import time; from wolt_jupyter import deployments; t = time.monotonic(); "
        f"deployments.undeploy({name!r}); print(time.monotonic() - t)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_env(home), capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-1500:]
    return float(out.stdout.split()[-1])


def test_a_killed_supervisor_is_replaced_while_its_runtime_serves_on(models, wolt_home) -> None:
    from wolt_jupyter import deployments

    d = deployments.deploy("orphan", model=models["v1"])
    first, runtime = pid_of(wolt_home, "orphan"), runtime_pid(wolt_home, "orphan")
    with Load(d.url, "orphan", concurrency=4) as load:
        load.wait_for(300)
        os.kill(first, signal.SIGKILL)
        killed = time.monotonic()
        while supervisor_state(wolt_home, "orphan").get("supervisor_pid") == first:
            assert time.monotonic() - killed < 5, "no successor within 5 s"
            time.sleep(0.02)
        adopted = time.monotonic() - killed
        n = len(load.outcomes)
        load.wait_for(n + 300)
    print(
        f"supervisor SIGKILLed: adopted after {adopted:.2f} s; {len(load.outcomes)} requests, 0 expected lost"
    )
    assert not failures(load.outcomes), failures(load.outcomes)[:3]
    state = supervisor_state(wolt_home, "orphan")
    assert state["runtime_pid"] == runtime and state["supervisor_restarts"] == 1  # the same process serves
    assert state["restarts"] == 0 and deployments.get("orphan").status == "ready"
    # the successor supervises: a crash of the runtime is restarted, on the same port
    os.kill(runtime, signal.SIGKILL)
    deadline = time.monotonic() + 60
    while supervisor_state(wolt_home, "orphan").get("runtime_pid") in (runtime, None) or not is_ready(d.url):
        assert time.monotonic() < deadline, supervisor_state(wolt_home, "orphan")
        time.sleep(0.05)
    now = deployments.get("orphan")
    assert now.status == "ready" and now.restarts == 1
    # undeploy from another process stops the successor and the runtime, fast, and leaves nothing
    took = _undeploy_elsewhere(wolt_home, "orphan")
    print(f"undeploy from another process: {took:.2f} s")
    assert took <= 2.0 and processes_serving(wolt_home, "orphan") == []


def test_undeploy_from_another_process_takes_seconds_not_the_stop_timeout(models, wolt_home) -> None:
    from wolt_jupyter import deployments

    deployments.deploy("elsewhere", model=models["v1"])  # this process started its supervisor
    took = _undeploy_elsewhere(wolt_home, "elsewhere")
    print(f"undeploy from another process: {took:.2f} s")
    assert took <= 2.0 and processes_serving(wolt_home, "elsewhere") == []


def test_up_brings_back_deployments_after_a_reboot(models, wolt_home) -> None:
    from wolt_jupyter import deployments

    d = deployments.deploy("boot", model=models["v1"])
    os.killpg(pid_of(wolt_home, "boot"), signal.SIGKILL)  # supervisor and runtime gone, as after a reboot
    time.sleep(0.3)
    assert deployments.get("boot").status == "stopped"
    deployed_with = os.environ["MLFLOW_TRACKING_URI"]
    cli = subprocess.run(  # from a shell whose settings name another tracking server
        [sys.executable, "-m", "wolt_jupyter.cli", "up"],
        env={**_env(wolt_home), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert cli.returncode == 0, cli.stderr[-1500:]
    assert f"boot: ready at {d.url}" in cli.stdout
    assert deployments.get("boot").status == "ready" and is_ready(d.url)
    # the restart kept the server the deployment was made with: the record says which
    environ = Path(f"/proc/{runtime_pid(wolt_home, 'boot')}/environ").read_bytes().split(b"\0")
    assert f"MLFLOW_TRACKING_URI={deployed_with}".encode() in environ


def test_undeploy_counts_the_shadow_rows_it_could_not_log(wolt_home, monkeypatch) -> None:
    import cloudpickle

    import wolt_jupyter
    from wolt_jupyter import deployments

    cloudpickle.register_pickle_by_value(sys.modules[__name__])

    X = pd.DataFrame(np.ones((3, 3)), columns=FEATURES)
    from sklearn.linear_model import LinearRegression

    wolt_jupyter.register(LinearRegression().fit(X, [1, 2, 3]), name="fast", input_example=X)
    wolt_jupyter.register(SlowModel(), name="slow", input_example=X)
    monkeypatch.setenv("WOLT_SHADOW_DRAIN_S", "0.5")
    d = deployments.deploy("drain", model="models:/fast/1", shadow=["models:/slow/1"])
    with Load(d.url, "drain") as load:
        load.wait_for(400)
    sent = {o.id for o in load.outcomes if o.status == 200}
    # reading the log while the shadow is far behind: every live row is there, the wait is bounded, and a
    # warning says what is not in the frame yet (one rule for the magic and the function)
    t0 = time.monotonic()
    with pytest.warns(UserWarning, match="shadow copies are still being predicted"):
        early = wolt_jupyter.read_responses("drain")
    assert time.monotonic() - t0 < 20
    assert set(early.loc[~early["shadow"], "id"]) == sent
    gone = deployments.undeploy("drain")
    log = wolt_jupyter.read_responses("drain")
    shadow_logged = int(log["shadow"].sum())
    assert gone.shadow_not_logged > 0 and f"{gone.shadow_not_logged} shadow rows not logged" in repr(gone)
    # every copy is accounted for: predicted and logged, or counted as not logged (none dropped on a full queue)
    assert shadow_logged + gone.shadow_not_logged == len(sent)
    assert set(log.loc[~log["shadow"], "id"]) == sent


class SlowModel(mlflow.pyfunc.PythonModel):
    """A shadow that needs 20 ms a row: it falls behind any real load."""

    def predict(self, context, model_input, params=None):
        time.sleep(0.02 * len(model_input))
        return np.zeros(len(model_input))


def test_cli_runs_every_operation_from_a_spec_file(models, wolt_home, tmp_path) -> None:
    spec = tmp_path / "eta.yaml"
    spec.write_text(
        "name: cli-eta\n"
        "variants:\n"
        f"  - {{name: main, model: '{models['champion']}', traffic: 80}}\n"
        f"  - {{name: challenger, model: '{models['v2']}', traffic: 20}}\n"
    )

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "wolt_jupyter.cli", *args],
            env=_env(wolt_home),
            capture_output=True,
            text=True,
            timeout=300,
        )

    dry = cli("deploy", "--spec", str(spec), "--dry-run")
    assert dry.returncode == 0 and "dry-run" in dry.stdout and "LocalRuntime" in dry.stdout
    out = cli("deploy", "--spec", str(spec))
    assert out.returncode == 0 and "ready" in out.stdout and "models:/eta/1" in out.stdout, out.stderr[-1500:]
    assert cli("traffic", "cli-eta", "main=50", "challenger=50").returncode == 0
    assert "cli-eta" in cli("deployments").stdout
    assert cli("promote", "cli-eta", "main").returncode == 0
    rb = cli("rollback", "cli-eta")
    assert rb.returncode == 0 and "50%" in rb.stdout
    bad = cli("traffic", "ghost", "main=100")
    assert (
        bad.returncode == 1
        and bad.stderr.strip().count("\n") == 0
        and "no deployment named 'ghost'" in bad.stderr
    )
    bad = cli("traffic", "cli-eta", "main=half")
    assert bad.returncode == 1 and "whole numbers" in bad.stderr
    gone = cli("undeploy", "cli-eta")
    assert gone.returncode == 0 and "removed" in gone.stdout
    assert cli("deployments").stdout.strip() == "no deployments"
