"""Registry polling on the embedded store and a real `mlflow server`: candidates found once, none missed."""

from __future__ import annotations

import json
import os
import stat

import pytest

from wolt_jupyter._mlflow import mlflow_client
from wolt_jupyter.config import settings
from wolt_jupyter.errors import ConfigError, NotFound
from wolt_jupyter.tracking import ensure_experiment
from wolt_jupyter.updater.policy import Watch
from wolt_jupyter.updater.watch import RegistryWatcher

from helpers import unique


@pytest.fixture
def registry(store: str):
    """A real MLflow client on the store, and a helper that registers a version (no artifacts needed)."""
    c = mlflow_client()
    name = unique("watched")
    c.create_registered_model(name)
    run = c.create_run(ensure_experiment(unique("watch-exp"), settings(), c))

    def new_version(**tags: str) -> str:
        source = f"runs:/{run.info.run_id}/model"
        mv = c.create_model_version(name, source=source, run_id=run.info.run_id, tags=tags or None)
        return str(mv.version)

    return c, name, new_version


def versions(candidates) -> list[str]:
    return [c.version for c in candidates]


def test_every_new_version_once_and_nothing_missed_across_restarts(registry, tmp_path) -> None:
    _, name, new_version = registry
    new_version()  # version 1: there before the watcher, history
    cursor = tmp_path / "updater" / "cursor.json"
    watcher = RegistryWatcher(Watch(name), cursor)
    assert watcher.poll() == []
    assert stat.S_IMODE(os.stat(cursor).st_mode) == 0o600
    new_version(), new_version()
    found = watcher.poll()
    assert (
        versions(found) == ["2", "3"]
        and found[0].why == "new version 2"
        and found[0].uri == f"models:/{name}/2"
    )
    assert versions(watcher.poll()) == ["2", "3"]  # not taken over yet: still there
    watcher.done("2")
    assert versions(watcher.poll()) == ["3"]

    # the service dies before taking 3 over; versions 4 and 5 arrive while it is down
    new_version(), new_version()
    restarted = RegistryWatcher(Watch(name), cursor)
    assert versions(restarted.poll()) == ["3", "4", "5"]
    for v in ("3", "4", "5"):
        restarted.done(v)
    assert restarted.poll() == []
    assert RegistryWatcher(Watch(name), cursor).poll() == []  # and after another restart: never twice
    state = json.loads(cursor.read_text())
    assert state["last_version"] == 5 and state["handled"] == ["2", "3", "4", "5"] and state["polls"] == 7


def test_alias_moves_are_candidates_once(registry, tmp_path) -> None:
    c, name, new_version = registry
    for _ in range(3):
        new_version()
    watcher = RegistryWatcher(Watch(name, alias="challenger"), tmp_path / "cursor.json")
    assert watcher.poll() == []  # new versions without the alias are not candidates
    c.set_registered_model_alias(name, "challenger", "2")
    found = watcher.poll()
    assert versions(found) == ["2"] and "alias 'challenger'" in found[0].why
    watcher.done("2")
    c.set_registered_model_alias(name, "challenger", "3")
    assert versions(watcher.poll()) == ["3"]
    watcher.done("3")
    c.set_registered_model_alias(name, "challenger", "2")  # back to one already handled
    assert watcher.poll() == []
    v4 = new_version()
    c.set_registered_model_alias(name, "challenger", v4)
    assert versions(watcher.poll()) == ["4"]


def test_tag_set_after_registration_is_found(registry, tmp_path) -> None:
    c, name, new_version = registry
    watcher = RegistryWatcher(Watch(name, tag="validated=yes"), tmp_path / "cursor.json", start_after=0)
    new_version(validated="no")
    assert watcher.poll() == []
    new_version(validated="yes")
    assert versions(watcher.poll()) == ["2"]
    c.set_model_version_tag(name, "1", "validated", "yes")  # the tag arrives later on version 1
    found = watcher.poll()
    assert versions(found) == ["2", "1"] or versions(found) == ["1", "2"]
    assert {f.version: f.tags["validated"] for f in found} == {"1": "yes", "2": "yes"}


def test_start_after_the_champion_finds_a_challenger_registered_before_start(registry, tmp_path) -> None:
    c, name, new_version = registry
    new_version(), new_version()
    c.set_registered_model_alias(name, "challenger", "2")
    by_alias = RegistryWatcher(Watch(name, alias="challenger"), tmp_path / "a.json", start_after=1)
    assert versions(by_alias.poll()) == ["2"]
    every = RegistryWatcher(Watch(name), tmp_path / "b.json", start_after=1)
    assert versions(every.poll()) == ["2"]


def test_bad_cursor_files_say_what_to_do(registry, tmp_path) -> None:
    _, name, _ = registry
    path = tmp_path / "cursor.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"unreadable .* move it away"):
        RegistryWatcher(Watch(name), path).poll()
    path.write_text(json.dumps({"model": "other"}))
    with pytest.raises(ConfigError, match="follows model 'other'"):
        RegistryWatcher(Watch(name), path).poll()


def test_unknown_model_is_one_line(store: str, tmp_path) -> None:
    with pytest.raises(NotFound) as err:
        RegistryWatcher(Watch(unique("missing")), tmp_path / "c.json").poll()
    assert "\n" not in str(err.value)
