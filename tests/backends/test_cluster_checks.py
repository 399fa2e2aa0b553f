"""The pre-apply checks of the cluster targets, through the magics, against the project's test API server.

The dry run runs the same checks as an apply and says which of them asked the cluster; refusals leave the
cluster untouched; model locations the cluster cannot read are reported (or refused); settings reach the
PodMonitor, the request logger and the service account.
"""

from __future__ import annotations

import pytest

ISVC = ("serving.kserve.io/v1beta1", "InferenceService")
SDEP = ("machinelearning.seldon.io/v1", "SeldonDeployment")


def failure(shell, capsys, line: str) -> str:
    """Run a magic that must fail; its last output line (the one-line error)."""
    result = shell.run_cell(line)
    assert not result.success
    out = capsys.readouterr()
    return (out.out + out.err).strip().splitlines()[-1]


def test_kserve_dry_run_makes_the_canary_check_an_apply_makes(shell, cluster, models, capsys) -> None:
    last = failure(
        shell,
        capsys,
        f"%wolt_deploy risk --model {models['v1']} --ab {models['v2']}=30 --target kserve --dry-run",
    )
    assert last.endswith(
        "deploy main (models:/eta/1) alone first, then add 'challenger' as the canary (the cluster serves "
        "nothing for 'risk')"
    )
    shell.run_line_magic("wolt_deploy", f"risk --model {models['v1']} --target kserve")
    d = shell.run_line_magic("wolt_deploy", f"risk --model {models['v1']} --ab {models['v2']}=30 --dry-run")
    assert d.status == "dry-run"
    assert d.checks == [
        "InferenceService risk matches the KServe v0.20.0 CRD schema (offline)",
        "InferenceService risk passes KServe v0.20.0's admission rules (offline)",
        "KServe canary 'challenger' against the served revision 'main' (asked the cluster)",
        "server-side dry run (dryRun=All, fieldValidation=Strict) (asked the cluster)",
    ]
    assert "checked" in repr(d) and "asked the cluster" in d._repr_html_()
    isvc = cluster.get_object(*ISVC, "default", "risk")
    assert "canaryTrafficPercent" not in isvc["spec"]["predictor"]  # the dry run applied nothing


def test_dry_run_without_a_cluster_says_which_checks_need_it(shell, models, unreachable_cluster) -> None:
    d = shell.run_line_magic(
        "wolt_deploy", f"risk --model {models['v1']} --ab {models['v2']}=30 --target kserve --dry-run"
    )
    assert d.checks[:2] == [
        "InferenceService risk matches the KServe v0.20.0 CRD schema (offline)",
        "InferenceService risk passes KServe v0.20.0's admission rules (offline)",
    ]
    assert d.checks[2].startswith(
        "KServe canary 'challenger' against the served revision 'main': NOT RUN, needs the cluster "
        f"(cannot reach the Kubernetes API at {unreachable_cluster}: connection refused)"
    )
    assert d.checks[3] == (
        "server-side dry run (dryRun=All, fieldValidation=Strict): NOT RUN, needs the cluster "
        f"(cannot reach the Kubernetes API at {unreachable_cluster}: connection refused)"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            "--shadow models:/eta/2 --shadow models:/eta/3 --target seldon",
            "UsageError: Seldon Core allows one shadow predictor, got 2 (shadow, shadow-2): keep one "
            "--shadow, or deploy with --target kubernetes (the project's router mirrors to any number)",
        ),
        (
            "--ab models:/eta/2=50 --sticky-key user_id --target seldon",
            "UsageError: Seldon Core splits traffic at random per request and cannot keep a 'user_id' on "
            "one variant: drop --sticky-key, or deploy with --target kubernetes (the project's router honours it)",
        ),
        (
            "--ab models:/eta/2=50 --sticky-key user_id --target kserve",
            "UsageError: KServe splits traffic at random per request and cannot keep a 'user_id' on one "
            "variant: drop --sticky-key, or deploy with --target kubernetes (the project's router honours it)",
        ),
    ],
)
def test_refusals_reach_the_magic_and_leave_the_cluster_untouched(
    shell, cluster, models, capsys, args, message
) -> None:
    assert failure(shell, capsys, f"%wolt_deploy fraud --model {models['v1']} {args}") == message
    assert cluster.get_object(*SDEP, "default", "fraud") is None
    assert cluster.get_object(*ISVC, "default", "fraud") is None
    assert shell.run_line_magic("wolt_deployments", "").empty


def test_kserve_name_must_start_with_a_letter(shell, cluster, models, capsys) -> None:
    last = failure(shell, capsys, f"%wolt_deploy 7eta --model {models['v1']} --target kserve")
    assert last.startswith(
        "UsageError: KServe would refuse InferenceService 7eta: its name must start with a letter"
    )
    assert cluster.get_object(*ISVC, "default", "7eta") is None


def test_artifacts_on_this_machine_warn_or_refuse(
    shell, cluster, models, wolt_home, monkeypatch, capsys
) -> None:
    d = shell.run_line_magic("wolt_deploy", f"fraud --model {models['v1']} --target seldon --dry-run")
    local = (wolt_home.resolve() / "artifacts").as_uri()
    [warning] = d.warnings
    assert warning.startswith(f"variant main: seldon pods cannot read the model artifacts at {local}")
    assert warning.endswith(
        "(a path on this machine): run an MLflow server with remote artifact storage (e.g. `mlflow server "
        "--artifacts-destination s3://BUCKET`), point tracking_uri at it and re-register the model"
    )
    d = shell.run_line_magic("wolt_deploy", f"fraud --model {models['v1']} --target kubernetes --dry-run")
    assert d.warnings[0].startswith(
        "the kubernetes runtime loads models through MLflow, but the tracking store"
    )

    monkeypatch.setenv("WOLT_UNREACHABLE_ARTIFACTS", "refuse")
    last = failure(shell, capsys, f"%wolt_deploy fraud --model {models['v1']} --target seldon")
    assert last == f"UsageError: {warning}"
    assert cluster.get_object(*SDEP, "default", "fraud") is None


def test_remote_artifacts_pass_and_settings_reach_the_manifests(shell, cluster, models, monkeypatch) -> None:
    monkeypatch.setenv("WOLT_CLUSTER_TRACKING_URI", "http://mlflow.ml:5000")
    monkeypatch.setenv("WOLT_POD_MONITOR", "true")
    monkeypatch.setenv("WOLT_SERVICE_ACCOUNT", "models-reader")
    d = shell.run_line_magic("wolt_deploy", f"eta --model {models['v1']} --target kubernetes")
    assert d.status == "ready" and d.grpc_url == "eta.default.svc.cluster.local:8081"
    monitor = cluster.get_object("monitoring.coreos.com/v1", "PodMonitor", "default", "eta")
    assert monitor["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    pod = cluster.get_object("apps/v1", "Deployment", "default", "eta")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "models-reader"
    # undeploy finds what the project created by label, whatever the settings are now
    monkeypatch.delenv("WOLT_POD_MONITOR")
    shell.run_line_magic("wolt_undeploy", "eta")
    assert cluster.get_object("monitoring.coreos.com/v1", "PodMonitor", "default", "eta") is None
    assert cluster.get_object("v1", "ConfigMap", "default", "eta-spec") is None


def test_kserve_request_logger_from_the_settings(shell, cluster, models, monkeypatch) -> None:
    monkeypatch.setenv("WOLT_REQUEST_LOGGER_URL", "http://broker.ml/requests")
    shell.run_line_magic("wolt_deploy", f"risk --model {models['v1']} --target kserve")
    predictor = cluster.get_object(*ISVC, "default", "risk")["spec"]["predictor"]
    assert predictor["logger"] == {"mode": "all", "url": "http://broker.ml/requests"}
