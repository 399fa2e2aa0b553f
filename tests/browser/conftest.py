"""A real ``jupyter lab`` with this checkout's server and lab extensions, and Debian's Chromium driven by
Playwright for Python. One lab for the whole folder (it takes seconds to start); screenshots go to
``test-output/browser/`` (``WOLT_TEST_OUTPUT`` overrides), kept by CI as artifacts."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import ISOLATED_ENV, free_port, register_eta_models, stop_server, wait_http

ROOT = Path(__file__).resolve().parents[2]
BUILT = ROOT / "wolt_jupyter" / "labextension"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@dataclass
class Lab:
    url: str
    token: str
    home: Path
    root: Path

    def page_url(self, path: str = "lab") -> str:
        return f"{self.url}/{path}?token={self.token}"


@pytest.fixture(scope="session")
def screenshots() -> Path:
    out = Path(os.environ.get("WOLT_TEST_OUTPUT", ROOT / "test-output")) / "browser"
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """Two registered models (``champion`` on v1) in a fresh state dir, then ``jupyter lab`` over it."""
    if not (BUILT / "package.json").is_file():
        pytest.fail(
            "the lab extension is not built: run `make labextension` (jlpm install && jlpm build:prod)"
        )
    if not Path(CHROMIUM).exists():
        pytest.fail(
            "Chromium is missing: run `bash scripts/install-system-deps.sh` (apt-get install chromium)"
        )
    base = tmp_path_factory.mktemp("lab")
    home, root, data, config = (base / d for d in ("wolt-home", "notebooks", "data", "config"))
    settings = base / "settings" / "@jupyterlab" / "apputils-extension"
    for d in (root, data / "labextensions", config, settings):
        d.mkdir(parents=True)
    # no "Jupyter news?" toast over the screenshots
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))
    (data / "labextensions" / "wolt-jupyter").symlink_to(
        BUILT
    )  # this checkout's build, whatever is installed
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"ServerApp": {"jpserver_extensions": {"wolt_jupyter": True}}})
    )
    with pytest.MonkeyPatch.context() as mp:
        for name in ISOLATED_ENV:
            mp.delenv(name, raising=False)
        mp.setenv("WOLT_JUPYTER_HOME", str(home))
        register_eta_models()
        token = secrets.token_hex(16)
        port = free_port()
        env = {
            **os.environ,
            "JUPYTER_PATH": str(data),
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTERLAB_SETTINGS_DIR": str(base / "settings"),
            "JUPYTERLAB_WORKSPACES_DIR": str(base / "workspaces"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        log = base / "lab.log"
        cmd = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}",
            "--ip=127.0.0.1", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
            "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--ServerApp.open_browser=False",
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        try:
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/api/status?token={token}", 60, proc, log)
            yield Lab(url=url, token=token, home=home, root=root)
        finally:
            from wolt_jupyter import deployments

            for name in deployments.revision_store().names():
                try:
                    deployments.undeploy(name)
                except Exception as exc:  # keep cleaning up the others
                    print(f"undeploy {name}: {exc}")
            stop_server(proc, 15)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )  # fmt: skip
        yield b
        b.close()


@pytest.fixture
def page(browser, lab: Lab) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(lab.page_url())
    page.wait_for_selector("#jp-main-dock-panel", state="visible")
    yield page
    context.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the item, so a fixture can screenshot a failed test."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report
