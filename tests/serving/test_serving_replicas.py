"""Replicas of one deployment writing one PostgreSQL response log, as the kubernetes target's pods do: three
real runtime processes (``python -m wolt_jupyter.serving --spec``, each with its own state dir like a pod's
``emptyDir``, the store's URL in ``WOLT_RESPONSE_STORE_URL`` like the pod's Secret) under concurrent load, one
of them SIGTERMed mid-load. The notebook's reader, which finds the store through the deployment record, must
see every acknowledged request exactly once."""

from __future__ import annotations

import importlib.util
import itertools
import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_support import Store, lr_spec, request, row_doc, spawn_runtime, stop_runtime, wait_ready

_spec = importlib.util.spec_from_file_location(
    "wolt_tests_pg_server", Path(__file__).parents[1] / "pg_server.py"
)
assert _spec and _spec.loader
pg_server = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pg_server)

CLIENTS = 6
LOAD_S = 6.0
TERM_AT_S = 2.0


@pytest.fixture
def shared_store(tmp_path: Path) -> Iterator[str]:
    """A PostgreSQL server of this test's own, with one empty database: the cluster's response store."""
    try:
        with pg_server.postgres_server(tmp_path) as url:
            yield pg_server.new_database(url)
    except pg_server.PostgresUnavailable as exc:
        pytest.fail(f"PostgreSQL test server unavailable: {exc}", pytrace=False)


def test_replicas_log_every_acknowledged_request_once_into_one_store(
    model_store: Store, shared_store: str, wolt_home: Path, tmp_path: Path, monkeypatch
) -> None:
    spec = {**lr_spec("eta"), "variants": lr_spec("eta")["variants"][:2]}  # main 90 / challenger 10
    env = {"WOLT_RESPONSE_STORE_URL": shared_store, "WOLT_REVISION": "1"}
    pods = [spawn_runtime(model_store, spec, tmp_path / f"pod{i}", env_extra=env) for i in range(3)]
    try:
        for pod in pods:
            wait_ready(pod)
        acked: dict[int, list[str]] = {i: [] for i in range(len(pods))}
        refused = Counter()
        stop = threading.Event()
        ids = itertools.count()

        def client(k: int) -> None:
            for n in itertools.cycle(range(len(pods))):
                if stop.is_set():
                    return
                i = (n + k) % len(pods)
                rid = f"r{next(ids)}"
                body = json.dumps(row_doc([[0.1 * k, 0.2, -0.3, 0.4]], id=rid)).encode()
                try:
                    status, _, _ = request(
                        f"{pods[i].url}/v2/models/eta/infer", body, {"Content-Type": "application/json"}, 5
                    )
                except OSError:
                    status = 0
                if status == 200:
                    acked[i].append(rid)
                else:
                    refused[i] += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(CLIENTS)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(TERM_AT_S)
        pods[1].proc.send_signal(signal.SIGTERM)  # a pod deleted under load: SIGTERM, then it flushes
        assert pods[1].proc.wait(30) == 0, pods[1].log.read_text()[-3000:]
        time.sleep(max(0.0, LOAD_S - (time.monotonic() - t0)))
        stop.set()
        for t in threads:
            t.join(30)
    finally:
        for pod in pods:
            stop_runtime(pod)
    for pod in pods:
        assert pod.proc.returncode == 0, pod.log.read_text()[-3000:]

    # the notebook: no store configured here; the deployment record names the cluster's store
    from wolt_jupyter import read_responses
    from wolt_jupyter.revisions import DeploymentRecord, RevisionStore
    from wolt_jupyter.spec import DeploymentSpec

    monkeypatch.delenv("WOLT_RESPONSE_STORE_URL", raising=False)
    store = RevisionStore(wolt_home)
    revision = store.add_revision(DeploymentSpec.from_dict(spec))
    store.save_record(
        DeploymentRecord("eta", "kubernetes", "ml", revision=revision, response_store=shared_store)
    )
    log = read_responses("eta")  # since the last deploy: revision 1, which the pods stamped
    logged = Counter(log.loc[~log["shadow"], "id"])
    every = [rid for pod_ids in acked.values() for rid in pod_ids]
    lost = set(every) - set(logged)
    duplicated = {rid: n for rid, n in logged.items() if n > 1}
    unacknowledged = set(logged) - set(every)  # answered by the stopping pod, but the client saw a 503/reset
    print(
        f"\nreplicas: acknowledged {len(every)} ({', '.join(str(len(v)) for v in acked.values())} per pod; "
        f"pod1 SIGTERMed at {TERM_AT_S}s), refused {sum(refused.values())}, logged {sum(logged.values())} rows, "
        f"lost {len(lost)}, duplicated {len(duplicated)}, logged but not acknowledged {len(unacknowledged)}"
    )
    assert all(len(v) > 50 for v in acked.values()), {i: len(v) for i, v in acked.items()}
    assert not lost, sorted(lost)[:10]
    assert not duplicated, list(duplicated.items())[:10]
    assert set(log["revision"]) == {1}
