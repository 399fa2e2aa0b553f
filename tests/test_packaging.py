"""What `pip install` brings: the wheel carries the built lab extension and enables the server extension."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_ships_the_lab_extension_and_enables_the_server_extension(tmp_path: Path) -> None:
    if not (ROOT / "wolt_jupyter" / "labextension" / "package.json").is_file():
        pytest.fail("the lab extension is not built: run `make labextension`")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        env=env,
        timeout=600,
    )
    (wheel,) = tmp_path.glob("wolt_jupyter-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    data = next(n.split("/data/")[0] for n in names if "/data/" in n) + "/data/"
    lab = data + "share/jupyter/labextensions/wolt-jupyter/"
    assert {lab + "package.json", lab + "static/style.js", lab + "install.json"} <= names
    assert any(n.startswith(lab + "static/remoteEntry.") for n in names)
    assert lab + "schemas/wolt-jupyter/plugin.json" in names
    assert data + "etc/jupyter/jupyter_server_config.d/wolt_jupyter.json" in names
    assert "wolt_jupyter/server/openapi.yaml" in names
    assert any(n.startswith("wolt_jupyter/mlflow_schema/") and n.endswith(".sql") for n in names)


def test_the_extension_points_name_what_exists() -> None:
    import wolt_jupyter

    (server,) = wolt_jupyter._jupyter_server_extension_points()
    assert server["module"] == "wolt_jupyter.server"
    import importlib

    assert callable(importlib.import_module(server["module"])._load_jupyter_server_extension)
    (lab,) = wolt_jupyter._jupyter_labextension_paths()
    assert lab["dest"] == "wolt-jupyter"
    assert (Path(wolt_jupyter.__file__).parent / lab["src"] / "package.json").is_file()


def test_the_mlflow_plugin_entry_points_are_the_targets_table() -> None:
    """pyproject.toml cannot import the table: this keeps its ``wolt-<target>`` entry points in step with it."""
    from wolt_jupyter.config import TARGETS
    from wolt_jupyter.mlflow_plugin import PREFIX

    text = (ROOT / "pyproject.toml").read_text()
    section = text.split('[project.entry-points."mlflow.deployments"]', 1)[1].split("\n[", 1)[0]
    names = [line.split("=", 1)[0].strip() for line in section.strip().splitlines() if "=" in line]
    assert names == [PREFIX + t for t in TARGETS]


def test_the_version_lives_in_one_place() -> None:
    """The lab extension, the REST description and the runtime image tag carry the package's version."""
    import json

    import yaml

    from wolt_jupyter._version import __version__
    from wolt_jupyter.backends.render import DEFAULT_IMAGE

    package = json.loads((ROOT / "labextension" / "package.json").read_text())
    api = yaml.safe_load((ROOT / "wolt_jupyter" / "server" / "openapi.yaml").read_text())
    assert (package["version"], str(api["info"]["version"])) == (__version__, __version__)
    assert DEFAULT_IMAGE.endswith(f":{__version__}")
