from pathlib import Path

import pytest

from wolt_jupyter.config import mask_url, settings
from wolt_jupyter.errors import ConfigError


def test_embedded_defaults_live_under_home(wolt_home: Path) -> None:
    s = settings()
    assert s.home == wolt_home.resolve()
    assert s.tracking_uri == f"sqlite:///{wolt_home.resolve() / 'mlflow.db'}"
    assert s.registry_uri == s.tracking_uri
    assert s.artifact_root == wolt_home.resolve() / "artifacts"
    assert s.embedded and not s.tracking_is_server
    assert s.default_target == "local"


def test_environment_beats_file_beats_default(wolt_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wolt_home.mkdir()
    (wolt_home / "config.toml").write_text(
        '[wolt_jupyter]\ntracking_uri = "http://file:5000"\nprometheus_url = "http://prom:9090"\n'
        'default_target = "kubernetes"\n'
    )
    s = settings()
    assert s.tracking_uri == "http://file:5000" and s.sources["tracking_uri"].endswith("config.toml")
    assert s.prometheus_url == "http://prom:9090"
    assert s.default_target == "kubernetes"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://env:5000")
    s = settings()
    assert s.tracking_uri == "http://env:5000" and s.sources["tracking_uri"] == "$MLFLOW_TRACKING_URI"
    assert s.tracking_is_server and not s.embedded


def test_bad_config_is_one_clear_error(wolt_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wolt_home.mkdir()
    (wolt_home / "config.toml").write_text("trackin_uri = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown setting.*trackin_uri"):
        settings()
    (wolt_home / "config.toml").write_text("")
    monkeypatch.setenv("WOLT_DEFAULT_TARGET", "moon")
    with pytest.raises(ConfigError, match="not one of local, kubernetes, seldon, kserve"):
        settings()


def test_mask_url_hides_only_the_password() -> None:
    assert mask_url("postgresql://bob:s3cret@db:5432/x") == "postgresql://bob:****@db:5432/x"
    assert mask_url("http://127.0.0.1:5000") == "http://127.0.0.1:5000"


def test_wolt_config_never_shows_a_secret(shell, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "tok-very-secret")
    monkeypatch.setenv("WOLT_RESPONSE_STORE_URL", "postgresql://bob:pw-very-secret@db/x")
    result = shell.run_line_magic("wolt_config", "")
    shown = repr(result) + result._repr_html_()
    assert "very-secret" not in shown
    assert "MLFLOW_TRACKING_TOKEN" in shown and "****" in shown
    assert "postgresql://bob:****@db/x" in shown


def test_one_targets_table_feeds_the_magic_the_plugin_the_settings_and_the_backends(
    wolt_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow.exceptions import MlflowException

    from wolt_jupyter.backends.base import backend_class
    from wolt_jupyter.config import TARGETS
    from wolt_jupyter.errors import InvalidArgument
    from wolt_jupyter.magics import WoltMagics
    from wolt_jupyter.mlflow_plugin import WoltDeploymentClient

    for target in TARGETS:
        assert backend_class(target).target == target  # each name is a Backend subclass's own
        assert WoltDeploymentClient(f"wolt-{target}").target == target
    target_option = next(a for a in WoltMagics.wolt_deploy.parser._actions if "--target" in a.option_strings)
    assert tuple(target_option.choices) == TARGETS
    with pytest.raises(InvalidArgument, match="choose one of local, kubernetes, seldon, kserve"):
        backend_class("docker")
    with pytest.raises(
        MlflowException, match="choose one of wolt-local, wolt-kubernetes, wolt-seldon, wolt-kserve"
    ):
        WoltDeploymentClient("wolt-docker")
    monkeypatch.setenv("WOLT_DEFAULT_TARGET", "docker")
    with pytest.raises(ConfigError, match="is not one of local, kubernetes, seldon, kserve"):
        settings()
