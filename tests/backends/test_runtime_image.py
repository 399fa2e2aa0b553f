"""The runtime image's contents, checked without building it (scripts/cluster/build-images.sh builds it in the
cluster tier): the image installs only wolt_jupyter/serving/requirements.txt, so the runtime must serve with
nothing else importable — no Jupyter, IPython, widgets, matplotlib, kubernetes client or full MLflow."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from wolt_jupyter.backends import render

from helpers import free_port, wait_http

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "wolt_jupyter" / "serving" / "requirements.txt"
# distributions of the notebook side that must never reach the image (mlflow: the full one; mlflow-skinny is it)
FORBIDDEN = {
    "mlflow", "jupyterlab", "jupyter-server", "notebook", "ipython", "ipywidgets", "ipykernel", "matplotlib",
    "kubernetes", "tornado", "nbclient", "nbformat", "flask", "alembic", "gunicorn", "graphene",
}  # fmt: skip
# modules the runtime imports only when present, and serves slower without: the image must have them
SPEEDUPS = {"uvloop", "simdjson", "httptools", "orjson"}


def _requirements() -> list[Requirement]:
    lines = (line.split("#", 1)[0].strip() for line in REQUIREMENTS.read_text().splitlines())
    return [Requirement(line) for line in lines if line]


def _closure() -> set[str]:
    """The distributions `pip install -r requirements.txt` installs, as this venv resolves them."""
    seen: set[str] = set()
    todo = [(r, frozenset(r.extras)) for r in _requirements()]
    while todo:
        req, extras = todo.pop()
        name = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # not installed here (a marker-excluded dependency, or one of another platform)
        key = f"{name}[{','.join(sorted(extras))}]"
        if key in seen:
            continue
        seen.add(key)
        for spec in dist.requires or []:
            dep = Requirement(spec)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if dep.marker is None or any(dep.marker.evaluate(env) for env in envs):
                todo.append((dep, frozenset(dep.extras)))
    return {k.split("[", 1)[0] for k in seen}


def _import_names(dists: set[str]) -> set[str]:
    """Top-level module names those distributions provide."""
    names = set()
    for module, owners in metadata.packages_distributions().items():
        if any(canonicalize_name(o) in dists for o in owners):
            names.add(module)
    return names


def test_requirements_name_only_runtime_packages() -> None:
    names = {canonicalize_name(r.name) for r in _requirements()}
    assert "mlflow-skinny" in names and "psycopg" in names
    assert any("binary" in r.extras for r in _requirements() if r.name == "psycopg")
    closure = _closure()
    assert "scikit-learn" in closure and "skops" in closure and "mlflow-skinny" in closure
    assert not closure & FORBIDDEN, f"the runtime's requirements pull {sorted(closure & FORBIDDEN)}"


def test_dockerfile_matches_manifests_and_installs_requirements() -> None:
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+\s*\nFROM \$\{BASE_IMAGE\}", text, re.M)
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    assert cmd == render.RUNTIME_ARGS  # the pod's args replace CMD: the same command either way
    assert re.search(r"^USER 1000(:1000)?$", text, re.M)
    # dependencies before the source, so a code change rebuilds only the last layers
    assert text.index("wolt_jupyter/serving/requirements.txt") < text.index("COPY wolt_jupyter ")
    assert "jupyterlab" not in re.sub(r"^#.*$", "", text, flags=re.M)


BLOCKER = textwrap.dedent(
    """
    import atexit, importlib.abc, json, runpy, sys

    allowed = set(json.loads(sys.argv[1]))
    out = sys.argv[2]
    blocked = []

    class OnlyTheImage(importlib.abc.MetaPathFinder):
        # modules the image would not have: not the standard library, not the requirements' closure
        def find_spec(self, name, path=None, target=None):
            top = name.partition(".")[0]
            if top in allowed or top in sys.stdlib_module_names or top.startswith("_"):
                return None
            blocked.append(name)
            raise ModuleNotFoundError(f"not in the runtime image: {name}", name=name)

    sys.meta_path.insert(0, OnlyTheImage())

    def report():
        loaded = sorted({m.partition(".")[0] for m in sys.modules})
        with open(out, "w") as f:
            json.dump({"loaded": loaded, "blocked": sorted(set(blocked))}, f)

    atexit.register(report)
    sys.argv = ["wolt_jupyter.serving", *sys.argv[3:]]
    runpy.run_module("wolt_jupyter.serving", run_name="__main__", alter_sys=True)
    """
)


def test_runtime_serves_with_only_its_requirements(tmp_path: Path) -> None:
    """The runtime loads a scikit-learn model (skops, without MLflow) and a pyfunc model (through
    mlflow.pyfunc) and answers an inference with every module outside the requirements blocked."""
    np = pytest.importorskip("numpy")
    mlflow_pyfunc = pytest.importorskip("mlflow.pyfunc")
    mlflow_sklearn = pytest.importorskip("mlflow.sklearn")
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).random((40, 3))
    mlflow_sklearn.save_model(LogisticRegression().fit(x, x[:, 0] > 0.5), tmp_path / "sk")
    (tmp_path / "double.py").write_text(
        "import mlflow.pyfunc\n"
        "class Double(mlflow.pyfunc.PythonModel):\n"
        "    def predict(self, context, model_input, params=None):\n"
        "        return model_input * 2\n"
        "mlflow.models.set_model(Double())\n"
    )
    mlflow_pyfunc.save_model(tmp_path / "pyf", python_model=str(tmp_path / "double.py"))
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: image-check\nvariants:\n"
        f"  - {{name: main, model: {tmp_path / 'sk'}, traffic: 100}}\n"
        f"  - {{name: copy, model: {tmp_path / 'pyf'}, shadow: true}}\n"
    )
    allowed = _import_names(_closure()) | {"wolt_jupyter"}
    report = tmp_path / "modules.json"
    port = free_port()
    env = {**os.environ, "WOLT_JUPYTER_HOME": str(tmp_path / "home"), "HOME": str(tmp_path / "home")}
    env["PYTHONPATH"] = str(ROOT)
    log = tmp_path / "runtime.log"
    proc = subprocess.Popen(
        [sys.executable, "-c", BLOCKER, json.dumps(sorted(allowed)), str(report),
         "--spec", str(spec), "--port", str(port), "--grpc-port", str(free_port())],
        env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_http(f"http://127.0.0.1:{port}/v2/health/ready", timeout=60, proc=proc, log=log)
        body = {
            "id": "r1",
            "inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP64", "data": [0.9, 0.1, 0.2]}],
        }
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/models/image-check/infer",
            data=json.dumps(body).encode(),
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            answer = json.loads(resp.read())
        assert answer["id"] == "r1" and answer["outputs"][0]["data"] == [1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    # a missing module can also fail quietly off the hot path (the response log drops the record)
    assert "not in the runtime image" not in text, text[-3000:]
    stopped = re.search(r"stopped: (\{.*\})", text)
    assert stopped and "'dropped': 0" in stopped.group(1) and "'written': 0" not in stopped.group(1), text[
        -3000:
    ]
    seen = json.loads(report.read_text())
    loaded = set(seen["loaded"])
    assert "mlflow" in loaded and "skops" in loaded  # both loaders ran under the blocker
    assert loaded >= SPEEDUPS, f"the runtime fell back without {sorted(SPEEDUPS - loaded)}"
    forbidden_modules = {"jupyter_server", "jupyterlab", "IPython", "ipywidgets", "matplotlib", "kubernetes"}
    assert not loaded & forbidden_modules
