"""A local deployment's leftovers (issue 25): the undeploy card counts every process the deployment ran in,
not only the last. Real processes throughout."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from deploy_support import is_ready, runtime_pid

pytestmark = pytest.mark.usefixtures("undeploy_all")


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
    again = deployments.deploy("tally", model=models["v1"])
    assert again.status == "ready"
    deployments.predict("tally", rows.head(3), per_row=True)
    assert deployments.undeploy("tally").summary["written"] == 3
    assert json.loads(json.dumps(gone.to_dict()))["summary"]["written"] == 50
