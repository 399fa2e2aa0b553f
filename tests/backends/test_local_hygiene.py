"""A local deployment's leftovers (issue 25): everything the project writes under the state dir is 0600/0700
whatever the umask (MLflow's artifact store, autologged plots, the runtime's model cache included), and the
undeploy card counts every process the deployment ran in, not only the last. Real processes throughout."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deploy_support import is_ready, runtime_pid

pytestmark = pytest.mark.usefixtures("undeploy_all")


def not_private(home: Path) -> list[tuple[str, str]]:
    """(mode, path) of every directory under ``home`` that is not 0700 and every file that is not 0600."""
    found = []
    for folder, dirs, files in os.walk(home):
        for name, want in [(d, 0o700) for d in dirs] + [(f, 0o600) for f in files]:
            path = Path(folder, name)
            st = path.lstat()
            if not stat.S_ISLNK(st.st_mode) and stat.S_IMODE(st.st_mode) != want:
                found.append((oct(stat.S_IMODE(st.st_mode)), str(path.relative_to(home))))
    return found


def test_a_notebook_flow_leaves_only_private_files_whatever_the_umask(wolt_home) -> None:
    """Train with autologging (plots drawn by the helper), register with a reference sample, deploy, predict,
    undeploy: the issue counted 152 files of 0644 under the state dir after this."""
    from sklearn.linear_model import LogisticRegression

    import wolt_jupyter as wj
    from wolt_jupyter.autolog_plots import _Helper, wait_for_plots

    old = os.umask(0o022)  # what a notebook server usually runs with
    try:
        X = pd.DataFrame(np.random.default_rng(0).normal(size=(60, 3)), columns=["a", "b", "c"])
        y = (X["a"] > 0).astype(int)
        with wj.experiment("private-flow"):
            model = LogisticRegression().fit(X, y)
        assert wait_for_plots() == []
        wj.register(model, name="lr", aliases=["champion"], input_example=X.head(3), reference=X)
        d = wj.deploy("private-flow", model="models:/lr@champion")
        assert d.status == "ready"
        assert len(wj.predict("private-flow", X.head(5))) == 5
        wj.undeploy("private-flow")
    finally:
        os.umask(old)
        if _Helper.proc is not None:  # the plot helper writes to this state dir: no later test may reuse it
            _Helper.finish(_Helper.proc)
            _Helper.proc = None
    assert list((wolt_home / "artifacts").rglob("*.png")), "the autologged plots were stored"
    assert list((wolt_home / "deployments" / "private-flow" / "models").rglob("MLmodel"))  # the model cache
    assert not_private(wolt_home) == []


def test_the_undeploy_card_counts_every_process_of_the_deployment(models, wolt_home, rows) -> None:
    """A runtime killed and restarted by its supervisor starts from what the earlier process counted: the
    undeploy card says how many rows were written over the deployment's life, not since the last restart."""
    from wolt_jupyter import deployments
    from wolt_jupyter.serving.tally import EVERY_S, read_tally, tally_path

    d = deployments.deploy("tally", model=models["v1"])
    assert len(deployments.predict("tally", rows.head(30), per_row=True)) == 30
    deployments.flush_log("tally")
    path = tally_path(wolt_home, "tally")
    deadline = time.monotonic() + 6 * EVERY_S
    while read_tally(path).get("written") != 30:  # saved every few seconds while it runs
        assert time.monotonic() < deadline, read_tally(path)
        time.sleep(0.2)
    victim = runtime_pid(wolt_home, "tally")
    os.kill(victim, signal.SIGKILL)  # no shutdown: only what was saved survives
    deadline = time.monotonic() + 60
    while runtime_pid(wolt_home, "tally") == victim or not is_ready(d.url):
        assert time.monotonic() < deadline, "not restarted"
        time.sleep(0.05)
    assert len(deployments.predict("tally", rows.head(20), per_row=True)) == 20
    gone = deployments.undeploy("tally")
    assert gone.summary["written"] == 50 and gone.summary["dropped"] == 0, gone.summary
    assert "50 rows written" in repr(gone)
    assert not path.exists()  # a later deployment of the name counts from zero
    path.write_text('{"written": 1000}')  # even with counts an older version left behind
    again = deployments.deploy("tally", model=models["v1"])
    assert again.status == "ready"
    deployments.predict("tally", rows.head(3), per_row=True)
    assert deployments.undeploy("tally").summary["written"] == 3
    assert json.loads(json.dumps(gone.to_dict()))["summary"]["written"] == 50
