"""Local security (issue 12): one masking function behind every place a URL is shown, private state files,
and one-line spec errors for every field type."""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path

import pytest

from wolt_jupyter.config import mask_url

# passwords as people paste them: unencoded "/", "@", ":" and percent-encoded ones
PASSWORDS = ["p@ss/w:rd", "s3cr/et", "a:b:c", "x@y@z", "pa%40ss%2Fw%3Ard", "top/secret@:%25"]
SECRET_PARTS = ("p@ss", "w:rd", "s3cr", "a:b:c", "x@y@z", "pa%40ss", "top/secret", "secret@")


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def assert_hidden(text: str, password: str) -> None:
    assert password not in text, text
    for part in SECRET_PARTS:
        if part in password:
            assert part not in text, (part, text)


# -- the one masking function --------------------------------------------------------------------------------
@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize(
    "template",
    [
        "postgresql://user:{pw}@db.example:5432/wolt",
        "postgresql+psycopg://user:{pw}@db.example/wolt?sslmode=require",
        "https://alice:{pw}@mlflow.example/",
        "error: cannot connect to 'mysql://u:{pw}@h/d' (refused)",
        'env: [{{"name": "X", "value": "http://u:{pw}@h:5000"}}]',
        "host=h user=u password={pw} dbname=wolt",
        "https://h/api?token={pw}&x=1",
    ],
)
def test_mask_url_hides_the_password_in_any_text(template: str, password: str) -> None:
    text = template.format(pw=password)
    shown = mask_url(text)
    assert_hidden(shown, password)
    assert "****" in shown
    assert ("db.example" in shown) == ("db.example" in text)  # the host stays readable


@pytest.mark.parametrize(
    "text",
    [
        "models:/eta@champion",
        "sqlite:////tmp/x.db",
        "https://h/a@b",
        None,
        "",
        "user@example.com wrote git@github.com:org/repo.git",
        "secretKeyRef: {key: MLFLOW_TRACKING_TOKEN, name: eta-credentials}",
        "      - name: WOLT_PROMETHEUS_TOKEN\n        valueFrom:\n          secretKeyRef:\n",
        "routing: {sticky_key: user_id}",
        "admin needs 'Authorization: Bearer <token>' (the deployment's admin.token)",
        "stringData: {MLFLOW_TRACKING_URI: '****'}",
        "https://u:****@h/x?token=****",
    ],
)
def test_mask_url_leaves_text_without_credentials_alone(text) -> None:
    assert mask_url(text) == text


# every form of credential the issue found shown in clear, each with the secret that must go and a part of the
# context that must stay readable
CORPUS = [
    ("https://ghp_T0kEn123@github.com/org/repo.git", "ghp_T0kEn123", "github.com/org/repo.git"),
    ("git clone https://x-access-token:ghs_abc@github.com/o/r", "ghs_abc", "github.com/o/r"),
    ("https://T0K@EN@mlflow.example/", "T0K@EN", "mlflow.example"),
    (
        "Authorization: Bearer eyJhbGciOi.eyJzdWIi.SflKxw",
        "eyJhbGciOi.eyJzdWIi.SflKxw",
        "Authorization: Bearer",
    ),
    ("headers: {'authorization': 'Bearer abc/def+ghi='}", "abc/def+ghi=", "authorization"),
    ("Authorization: Basic dXNlcjpwQHNz", "dXNlcjpwQHNz", "Basic"),
    ("PGPASSWORD=p@ss/w:rd psql -h db", "p@ss/w:rd", "psql -h db"),
    ("export MLFLOW_TRACKING_TOKEN=dapi0123abc", "dapi0123abc", "export MLFLOW_TRACKING_TOKEN="),
    ("MLFLOW_TRACKING_PASSWORD='s3cr et' mlflow ui", "s3cr et", "mlflow ui"),
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI/K7MDENG", "AWS_SECRET_ACCESS_KEY"),
    ("password: hunter2\nuser: wolt", "hunter2", "user: wolt"),
    ("  db_password:   'a b c'", "a b c", "db_password"),
    ('{"password": "hunter2", "user": "wolt"}', "hunter2", '"user": "wolt"'),
    ('{"api_key":"k-123","x":1}', "k-123", '"x":1'),
    ("X-Api-Key: k-456", "k-456", "X-Api-Key"),
    ("host=h user=u password=top/secret@:%25 dbname=wolt", "top/secret@:%25", "dbname=wolt"),
    ("https://h/api?token=abc123&page=2", "abc123", "page=2"),
    ("postgresql://wolt:p@ss/w:rd@db.ml:5432/wolt?sslmode=require", "p@ss/w:rd", "db.ml:5432/wolt"),
    ("webhook secret=whsec_42 rejected", "whsec_42", "rejected"),
]


@pytest.mark.parametrize(("text", "secret", "kept"), CORPUS, ids=[c[1] for c in CORPUS])
def test_mask_url_corpus_hides_every_form(text: str, secret: str, kept: str) -> None:
    shown = mask_url(text)
    assert secret not in shown and "****" in shown, shown
    assert kept in shown, shown
    assert mask_url(shown) == shown  # masking what is shown changes nothing more


def test_config_card_masks_every_url_setting(wolt_home, monkeypatch) -> None:
    from wolt_jupyter.config import settings

    for password in PASSWORDS:
        monkeypatch.setenv("WOLT_RESPONSE_STORE_URL", f"postgresql://u:{password}@h/db")
        monkeypatch.setenv("WOLT_CLUSTER_TRACKING_URI", f"http://u:{password}@mlflow.ml:5000")
        monkeypatch.setenv("WOLT_PROMETHEUS_URL", f"http://u:{password}@prom:9090")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        s = settings()
        for shown in (repr(s), s._repr_html_(), str(s.as_dict())):
            assert_hidden(shown, password)
            assert "****" in shown


def test_wolt_config_magic_masks(wolt_home, monkeypatch) -> None:
    from IPython.testing.globalipapp import get_ipython

    shell = get_ipython()
    shell.run_line_magic("load_ext", "wolt_jupyter")
    monkeypatch.setenv("WOLT_RESPONSE_STORE_URL", "postgresql://u:p@ss/w:rd@h/db")
    card = shell.run_line_magic("wolt_config", "")
    assert_hidden(repr(card) + card._repr_html_(), "p@ss/w:rd")


def test_dry_run_manifests_reference_a_secret_and_show_no_password() -> None:
    import json

    from wolt_jupyter.backends.base import Deployment
    from wolt_jupyter.backends.render import ClusterContext, credentials, render_kubernetes, with_credentials
    from wolt_jupyter.spec import DeploymentSpec

    spec = DeploymentSpec.from_dict(
        {"name": "eta", "variants": [{"name": "main", "model": "models:/eta/1", "traffic": 100}]}
    )
    for password in PASSWORDS:
        uri = f"http://u:{password}@mlflow.ml:5000"
        ctx = ClusterContext(namespace="ml", tracking_uri=uri)
        manifests = render_kubernetes(spec, ctx)
        kinds = [m["kind"] for m in manifests]
        # rendering never holds the value: the Secret says ****, the apply alone fills it in
        assert kinds[0] == "Secret" and manifests[0]["stringData"] == {"MLFLOW_TRACKING_URI": "****"}
        assert_hidden(json.dumps(manifests), password)
        applied = with_credentials(manifests, credentials(spec, ctx))
        assert applied[0]["stringData"]["MLFLOW_TRACKING_URI"] == uri and applied[1:] == manifests[1:]
        assert manifests[0]["stringData"]["MLFLOW_TRACKING_URI"] == "****"  # the rendered copy is untouched
        deployment = manifests[kinds.index("Deployment")]
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["MLFLOW_TRACKING_URI"] == {
            "name": "MLFLOW_TRACKING_URI",
            "valueFrom": {"secretKeyRef": {"name": "eta-credentials", "key": "MLFLOW_TRACKING_URI"}},
        }
        assert password not in str(deployment)  # the credential lives in the Secret only
        card = Deployment("eta", "kubernetes", "dry-run", manifests=manifests)
        for shown in (card.manifests_yaml, card._repr_html_(), repr(card)):
            assert_hidden(shown, password)
            assert "eta-credentials" in shown
    # a URI without a password stays inline: nothing to hide, no Secret
    plain = render_kubernetes(spec, ClusterContext(namespace="ml", tracking_uri="http://mlflow.ml:5000"))
    assert "Secret" not in [m["kind"] for m in plain]


def test_update_service_events_are_masked(tmp_path) -> None:
    """A decision's reason and its webhook message may quote a failure naming a store or a server."""
    from wolt_jupyter.updater.history import DecisionRecord, History
    from wolt_jupyter.updater.notify import Message

    reason = "rolled back: cannot reach postgresql://wolt:p@ss/w:rd@db.ml/wolt (Bearer abc.def)"
    history = History(tmp_path / "history.jsonl")
    history.append(DecisionRecord(1.0, "eta", "eta", "7", "6", 1, "canary 10%", "rollback", reason))
    stored = (tmp_path / "history.jsonl").read_text()
    body = Message("d1", "rollback", "eta/7", reason).body().decode()
    for shown in (stored, body):
        assert_hidden(shown, "p@ss/w:rd")
        assert "abc.def" not in shown and "db.ml/wolt" in shown


def test_runtime_log_lines_are_masked() -> None:
    from wolt_jupyter.serving.__main__ import _mask_record

    password = "p@ss/w:rd"
    try:
        raise ConnectionError(f"cannot reach postgresql://u:{password}@h/db")
    except ConnectionError:
        record = logging.LogRecord(
            "x",
            logging.ERROR,
            __file__,
            1,
            "store %s failed",
            ("postgresql://u:" + password + "@h/db",),
            sys.exc_info(),
        )
    assert _mask_record(record)
    text = logging.Formatter().format(record)
    assert_hidden(text, password)
    assert "postgresql://u:****@h/db" in text


def test_errors_and_labels_mask(wolt_home, monkeypatch) -> None:
    from wolt_jupyter.client import EndpointError, V2Client
    from wolt_jupyter.errors import InvalidArgument
    from wolt_jupyter.monitoring.prometheus import PrometheusSource
    from wolt_jupyter.responses.store import normalize_url

    password = "p@ss/w:rd"
    assert_hidden(PrometheusSource(f"http://u:{password}@127.0.0.1:1").name, password)
    with pytest.raises(InvalidArgument) as bad:
        normalize_url(f"p g://u:{password}@h/db")  # unparseable: the error quotes it, masked
    assert_hidden(str(bad.value), password)
    client = V2Client(f"http://u:{password}@127.0.0.1:1", "m", timeout=2)
    with pytest.raises(EndpointError) as unreachable:
        client.infer({"a": [1]})
    assert_hidden(str(unreachable.value), password)


def test_unreachable_tracking_server_error_masks(wolt_home, monkeypatch) -> None:
    from wolt_jupyter._mlflow import probe
    from wolt_jupyter.config import settings
    from wolt_jupyter.errors import TrackingUnavailable

    password = "p@ss/w:rd"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://u:{password}@127.0.0.1:1")
    with pytest.raises(TrackingUnavailable) as err:
        probe(settings())
    assert_hidden(str(err.value), password)


# -- private state -------------------------------------------------------------------------------------------
def test_private_dirs_and_files_whatever_the_umask(tmp_path) -> None:
    from wolt_jupyter.private import open_private, private_dir, private_file

    old = os.umask(0)
    try:
        d = private_dir(tmp_path / "a" / "b")
        assert mode(tmp_path / "a") == 0o700 and mode(d) == 0o700
        (tmp_path / "loose").mkdir(mode=0o755)
        assert mode(private_dir(tmp_path / "loose")) == 0o700  # ours: tightened
        shared = tmp_path / "shared"
        shared.mkdir()
        shared.chmod(0o1777)  # like /tmp: never changed
        private_dir(shared)
        assert mode(shared) == 0o1777
        f = private_file(tmp_path / "c" / "f.db")
        assert mode(f) == 0o600 and mode(tmp_path / "c") == 0o700
        f.chmod(0o644)
        assert mode(private_file(f)) == 0o600
        with open_private(tmp_path / "logs" / "runtime.log") as out:
            out.write(b"x")
        assert mode(tmp_path / "logs" / "runtime.log") == 0o600
    finally:
        os.umask(old)


def test_revisions_records_and_response_store_are_private(tmp_path) -> None:
    from wolt_jupyter.responses import add_feedback, default_store_url
    from wolt_jupyter.revisions import DeploymentRecord, RevisionStore
    from wolt_jupyter.spec import DeploymentSpec

    store = RevisionStore(tmp_path / "home")
    spec = DeploymentSpec.from_dict(
        {"name": "eta", "variants": [{"name": "main", "model": "models:/eta/1", "traffic": 100}]}
    )
    n = store.add_revision(spec)
    store.save_record(DeploymentRecord("eta", "local", revision=n))
    folder = store.dir("eta")
    assert mode(folder) == 0o700 and mode(folder / "revisions") == 0o700
    assert mode(folder / "deployment.json") == 0o600 and mode(folder / "revisions" / "0001.yaml") == 0o600
    url = default_store_url("eta", tmp_path / "home")
    assert add_feedback(url, [{"id": "a", "ground_truth": 1}]) == 1
    db = tmp_path / "home" / "responses" / "eta.db"
    assert mode(db) == 0o600 and mode(db.parent) == 0o700
    for extra in db.parent.glob("eta.db-*"):  # WAL and shared-memory files, while they exist
        assert mode(extra) == 0o600, extra


def test_embedded_mlflow_store_is_private(wolt_home) -> None:
    from wolt_jupyter._mlflow import configure

    s = configure()
    assert mode(s.home) == 0o700 and mode(s.home / "mlflow.db") == 0o600
    assert mode(s.artifact_root) == 0o700


# -- spec validation: one line naming the field, for every field type ----------------------------------------
BASE = {"name": "eta", "variants": [{"name": "main", "model": "models:/eta/1", "traffic": 100}]}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": 5}, "at name"),
        ({"variants": {"main": 1}}, "at variants"),
        ({"variants": [1]}, "at variants[0]"),
        ({"variants": [{"name": "main", "model": 1, "traffic": 100}]}, "variants[0].model"),
        ({"variants": [{"name": "main", "model": "models:/eta/1", "traffic": "all"}]}, "variants[0].traffic"),
        (
            {"variants": [{"name": "main", "model": "models:/eta/1", "traffic": 100, "shadow": "no"}]},
            "shadow",
        ),
        ({"routing": [1]}, "at routing"),
        ({"routing": {"sticky_key": 3}}, "routing.sticky_key"),
        ({"routing": {"sticky": "user"}}, "routing"),
        ({"logging": "on"}, "at logging"),
        ({"logging": {"responses": "yes"}}, "logging.responses"),
        ({"logging": {"sample": "abc"}}, "logging.sample"),
        ({"replicas": "2"}, "at replicas"),
        ({"resources": [1, 2]}, "at resources"),
        ({"resources": {"cpu": [1]}}, "resources.cpu"),
        ({"limits": {"max_body": "big"}}, "limits.max_body"),
        ({"limits": {"header_timeout": -1}}, "limits.header_timeout"),
        ({"limits": {"colour": 1}}, "limits"),
    ],
)
def test_every_spec_field_type_error_is_one_line_naming_it(change: dict, field: str) -> None:
    from wolt_jupyter.errors import InvalidArgument
    from wolt_jupyter.spec import DeploymentSpec

    with pytest.raises(InvalidArgument) as err:
        DeploymentSpec.from_dict({**BASE, **change})
    message = str(err.value)
    assert field in message and "\n" not in message and len(message) < 300, message


def test_limits_round_trip_and_reach_the_server() -> None:
    import argparse

    from wolt_jupyter.serving.__main__ import _limits
    from wolt_jupyter.spec import DeploymentSpec

    spec = DeploymentSpec.from_dict({**BASE, "limits": {"max_body": 1000, "header_timeout": 2.5}})
    assert DeploymentSpec.from_yaml(spec.to_yaml()) == spec
    assert "limits" not in DeploymentSpec.from_dict(BASE).to_dict()  # specs without limits read as before
    flags = dict.fromkeys(
        ("max_body_bytes", "idle_timeout", "max_header_count", "max_header_bytes", "max_url_bytes"), None
    )
    flags |= dict.fromkeys(("header_timeout", "body_timeout", "max_connections", "max_unsent_bytes"), None)
    flags |= dict.fromkeys(
        ("max_pipelined", "send_timeout", "grpc_max_concurrent_rpcs", "grpc_max_infer_streams"), None
    )
    limits = _limits(spec.limits, argparse.Namespace(**{**flags, "max_body_bytes": 500}))
    assert limits.max_body == 500 and limits.header_timeout == 2.5 and limits.max_url_bytes == 8 * 1024


def test_the_response_store_url_reaches_pods_only_through_the_secret_in_every_structure() -> None:
    """Both credentials (the tracking password, the response store's URL) live in the ``<name>-credentials``
    Secret, read by ``secretKeyRef``; a dry run's manifests, ``to_dict()``, the server's JSON and the printed
    YAML show the Secret's keys, never its values (the apply alone gets them: ``Plan.manifests``)."""
    import json

    from wolt_jupyter.backends.base import Deployment, Plan
    from wolt_jupyter.backends.render import (
        ClusterContext,
        credentials,
        render_kubernetes,
        response_store_problem,
        with_credentials,
    )
    from wolt_jupyter.server.serialize import deployment as as_json
    from wolt_jupyter.spec import DeploymentSpec

    spec = DeploymentSpec.from_dict(
        {"name": "eta", "variants": [{"name": "main", "model": "models:/eta/1", "traffic": 100}]}
    )
    for password in PASSWORDS:
        tracking = f"http://u:{password}@mlflow.ml:5000"
        store = f"postgresql://wolt:{password}@postgres.ml:5432/wolt"
        ctx = ClusterContext(namespace="ml", tracking_uri=tracking, response_store_url=store, revision=3)
        assert response_store_problem(spec, ctx, store) is None
        manifests = render_kubernetes(spec, ctx)
        secret = manifests[0]
        assert secret["kind"] == "Secret" and secret["stringData"] == {
            "MLFLOW_TRACKING_URI": "****",
            "WOLT_RESPONSE_STORE_URL": "****",
        }
        assert credentials(spec, ctx) == {"MLFLOW_TRACKING_URI": tracking, "WOLT_RESPONSE_STORE_URL": store}
        deployment = manifests[[m["kind"] for m in manifests].index("Deployment")]
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        for key in ("MLFLOW_TRACKING_URI", "WOLT_RESPONSE_STORE_URL"):
            assert env[key] == {
                "name": key,
                "valueFrom": {"secretKeyRef": {"name": "eta-credentials", "key": key}},
            }
        assert password not in json.dumps(deployment)
        plan = Plan(manifests, credentials=credentials(spec, ctx))
        card = Deployment("eta", "kubernetes", "dry-run", manifests=plan.manifests)
        for shown in (
            json.dumps(plan.shown), json.dumps(card.manifests), json.dumps(card.to_dict()),
            json.dumps(as_json(card)), card.manifests_yaml, repr(card), card._repr_html_(),
            json.dumps(plan.manifests), repr(plan),
        ):  # fmt: skip
            assert_hidden(shown, password)
            assert "eta-credentials" in shown and "WOLT_RESPONSE_STORE_URL" in shown
        applied = with_credentials(plan.manifests, plan.credentials)  # what the apply alone sends
        assert applied[0]["stringData"]["WOLT_RESPONSE_STORE_URL"] == store
    # no credentials: the store's URL still goes through the Secret, never inline
    ctx = ClusterContext(response_store_url="postgresql://db.ml/wolt")
    plain = render_kubernetes(spec, ctx)
    assert plain[0]["stringData"] == {"WOLT_RESPONSE_STORE_URL": "****"}
    assert "postgresql://db.ml" not in json.dumps(plain)
    assert with_credentials(plain, credentials(spec, ctx))[0]["stringData"] == {
        "WOLT_RESPONSE_STORE_URL": "postgresql://db.ml/wolt"
    }
