"""Scikit-learn models loaded without MLflow (``serving.flavors``) serve exactly MLflow's numbers.

Each model is saved by MLflow itself (``mlflow.sklearn.save_model`` / ``log_model`` into the real store of
``model_store``), loaded through the runtime's loader, and its answers through the V2 mapping compared with
``mlflow.pyfunc.load_model(...).predict`` on the same rows. Models the direct loader must not take (other
flavors, string columns, tensor signatures, a pipeline that selects columns by name) are checked to go
through MLflow, and still answer as MLflow does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from serving_support import REPO, Store

from wolt_jupyter.serving.flavors import DirectModel, direct_loadable, load_direct
from wolt_jupyter.serving.models import ModelAdapter, load
from wolt_jupyter.serving.tensors import Tensor

COLS = ["a", "b", "c"]


def _frame(rows: int, seed: int = 0) -> pd.DataFrame:
    return pd.DataFrame(np.random.default_rng(seed).normal(size=(rows, len(COLS))), columns=COLS)


def _served(adapter: ModelAdapter, frame: pd.DataFrame) -> list[tuple[str, np.ndarray]]:
    """What the runtime answers for ``frame`` sent as a client would: one [N,1] tensor per column."""
    tensors = [Tensor(c, "FP64", (len(frame), 1), frame[[c]].to_numpy()) for c in frame.columns]
    return adapter.predict_prepared(adapter.prepare(tensors))


def _mlflow_predict(path: Path, frame: pd.DataFrame) -> np.ndarray:
    import mlflow.pyfunc

    return np.asarray(mlflow.pyfunc.load_model(str(path)).predict(frame))


def _save(path: Path, model: Any, x: pd.DataFrame, **kwargs: Any) -> Path:
    import mlflow.sklearn
    from mlflow.models import infer_signature

    out = kwargs.pop("output", None)
    sig = infer_signature(x, model.predict(x) if out is None else out)
    mlflow.sklearn.save_model(
        model, str(path), signature=sig, input_example=x.head(3), pip_requirements=[], **kwargs
    )
    return path


@pytest.fixture(scope="module")
def fitted() -> dict[str, Any]:
    from sklearn.linear_model import LinearRegression, LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x = _frame(300)
    y = (x["a"] - 0.7 * x["c"] > 0.1).astype("int64")
    three = np.digitize(x["b"] + x["a"], [-0.5, 0.5])  # three classes
    return {
        "x": x,
        "clf": LogisticRegression().fit(x, y),
        "pipe": make_pipeline(StandardScaler(), LogisticRegression()).fit(x, three),
        "reg": LinearRegression().fit(x, x["a"] * 2.5 - x["b"]),
    }


@pytest.mark.parametrize(
    ("key", "options"),
    [
        ("clf", {}),  # MLflow 3's default: skops
        ("pipe", {"serialization_format": "pickle"}),
        ("reg", {"serialization_format": "cloudpickle"}),
        ("pipe", {"pyfunc_predict_fn": "predict_proba"}),
    ],
)
def test_direct_load_serves_mlflows_numbers(
    fitted: dict[str, Any], tmp_path: Path, key: str, options: dict[str, Any]
) -> None:
    x, model = fitted["x"], fitted[key]
    output = model.predict_proba(x) if options.get("pyfunc_predict_fn") == "predict_proba" else None
    path = _save(tmp_path / "model", model, x, output=output, **options)
    assert direct_loadable(path)
    adapter = load("main", str(path))
    assert isinstance(adapter.model, DirectModel), "a scikit-learn model with numeric columns loads directly"
    rows = _frame(57, seed=3)
    served = _served(adapter, rows)
    expected = _mlflow_predict(path, rows)
    assert len(served) == 1
    np.testing.assert_array_equal(served[0][1], expected)
    assert served[0][1].dtype == expected.dtype
    # the metadata a client reads is the one MLflow's model gives
    import mlflow.pyfunc

    via_mlflow = ModelAdapter("main", str(path), mlflow.pyfunc.load_model(str(path)))
    assert adapter.input_metadata() == via_mlflow.input_metadata()
    assert adapter.output_metadata == via_mlflow.output_metadata
    pd.testing.assert_frame_equal(adapter.model.input_example, via_mlflow.model.input_example)


@pytest.mark.integration
def test_models_the_direct_loader_leaves_to_mlflow(fitted: dict[str, Any], tmp_path: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, clf = fitted["x"], fitted["clf"]
    # a tensor signature and no signature at all: not columns, MLflow maps them
    import mlflow.sklearn
    from mlflow.models import infer_signature

    arr = x.to_numpy()
    mlflow.sklearn.save_model(clf, str(tmp_path / "tensor"), signature=infer_signature(arr, clf.predict(arr)))
    mlflow.sklearn.save_model(clf, str(tmp_path / "nosig"))
    for name in ("tensor", "nosig"):
        assert load_direct(tmp_path / name) is None
        assert not isinstance(load("main", str(tmp_path / name)).model, DirectModel)
    # selects columns by name: loads directly, but its array predict fails, so MLflow's model serves it
    by_name = make_pipeline(
        ColumnTransformer([("s", StandardScaler(), ["c", "a"])], remainder="drop"), LogisticRegression()
    ).fit(x, (x["a"] > 0).astype("int64"))
    path = _save(tmp_path / "by-name", by_name, x)
    assert isinstance(load_direct(path), DirectModel)
    adapter = load("main", str(path))
    assert not isinstance(adapter.model, DirectModel)
    rows = _frame(20, seed=9)
    np.testing.assert_array_equal(_served(adapter, rows)[0][1], _mlflow_predict(path, rows))
    # a string column goes through MLflow's schema enforcement
    sx = pd.DataFrame({"city": ["oslo", "rome", "oslo"], "n": [1.0, 2.0, 3.0]})
    strings = make_pipeline(
        ColumnTransformer([("n", StandardScaler(), ["n"])], remainder="drop"), LogisticRegression()
    ).fit(sx, [0, 1, 1])
    assert load_direct(_save(tmp_path / "strings", strings, sx)) is None


def test_pickle_deserialization_refused_as_mlflow_refuses(
    fitted: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _save(tmp_path / "model", fitted["clf"], fitted["x"])
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    assert load_direct(path) is None
    with pytest.raises(Exception, match="MLFLOW_ALLOW_PICKLE_DESERIALIZATION"):
        load("main", str(path))  # MLflow's loader, with MLflow's message


LOAD_FROM_CACHE = """
import json, sys
import numpy as np
from pathlib import Path
from wolt_jupyter.serving.models import load
from wolt_jupyter.serving.tensors import Tensor
adapter = load("main", sys.argv[1], cache_dir=Path(sys.argv[2]))
x = np.array(json.loads(sys.argv[3]))
out = adapter.predict_prepared(adapter.prepare([Tensor("x", "FP64", x.shape, x)]))
print(json.dumps({"mlflow_imported": "mlflow" in sys.modules, "skops_imported": "skops.io" in sys.modules,
                  "model": type(adapter.model).__name__,
                  "output": out[0][1].tolist()}))
"""


@pytest.mark.integration
def test_registered_version_served_without_importing_mlflow(model_store: Store, tmp_path: Path) -> None:
    """The deploy path: the kernel copies the pinned version into the model cache, the runtime loads it
    from there and never imports MLflow; the answers are MLflow's for that registered version."""
    from wolt_jupyter.serving.models import _cached

    env = {**os.environ, "MLFLOW_TRACKING_URI": model_store.uri, "PYTHONPATH": str(REPO)}
    env.pop("MLFLOW_REGISTRY_URI", None)
    cache = tmp_path / "cache"
    prefetch = "import sys; from pathlib import Path; from wolt_jupyter.serving.models import prefetch; "
    prefetch += "prefetch(sys.argv[1], Path(sys.argv[2]))"
    subprocess.run([sys.executable, "-c", prefetch, "models:/wolt-lr/1", str(cache)], env=env, check=True)
    local = _cached("models:/wolt-lr/1", cache)
    assert isinstance(local, Path) and (local / "MLmodel").is_file()
    x = np.random.default_rng(11).normal(size=(25, 4))
    done = subprocess.run(
        [sys.executable, "-c", LOAD_FROM_CACHE, "models:/wolt-lr/1", str(cache), json.dumps(x.tolist())],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got["model"] == "DirectModel"
    assert got["mlflow_imported"] is False
    assert got["skops_imported"] is False  # a plain estimator: our reader of the skops file
    expected = _mlflow_predict(local, pd.DataFrame(x, columns=["f0", "f1", "f2", "f3"]))
    assert got["output"] == expected.tolist()
    np.testing.assert_array_equal(
        expected, model_store.lr_v1.predict(pd.DataFrame(x, columns=["f0", "f1", "f2", "f3"]))
    )


PRELOAD = """
import sys
from wolt_jupyter.serving.supervisor import _preload_for_models
_preload_for_models(sys.argv[1:])
print("mlflow.pyfunc" in sys.modules, "sklearn.base" in sys.modules)
"""


@pytest.mark.integration
def test_supervisor_preloads_mlflow_only_for_models_that_need_it(
    fitted: dict[str, Any], tmp_path: Path
) -> None:
    """Before forking a runtime, the supervisor imports what the models already in the deployment's cache
    need (MLflow only for a model that needs MLflow's loader), so a restart skips the import; a first start
    never waits for it."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    from wolt_jupyter.serving.models import _cache_path, model_cache_dir, preload_modules

    x, clf = fitted["x"], fitted["clf"]
    cache = model_cache_dir(tmp_path, "pre")
    _save(_cache_path("models:/direct/1", cache), clf, x)
    arr = x.to_numpy()
    tensor_dir = _cache_path("models:/tensor/1", cache)
    mlflow.sklearn.save_model(clf, str(tensor_dir), signature=infer_signature(arr, clf.predict(arr)))
    assert preload_modules("models:/direct/1", cache) == ("sklearn.base", "sklearn.linear_model._logistic")
    assert preload_modules("models:/tensor/1", cache) == ("mlflow.pyfunc",)
    assert preload_modules("models:/absent/1", cache) == ()  # not downloaded yet: nothing to say
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    imported = {}
    for model in ("models:/direct/1", "models:/absent/1", "models:/tensor/1"):
        spec = tmp_path / f"{model.split('/')[1]}.yaml"
        spec.write_text(f"name: pre\nvariants:\n- name: main\n  model: {model}\n  traffic: 100\n")
        args = ["--spec", str(spec), "--state-dir", str(tmp_path)]
        done = subprocess.run(
            [sys.executable, "-c", PRELOAD, *args], env=env, capture_output=True, text=True, check=True
        )
        imported[model] = done.stdout.strip().splitlines()[-1]
    assert imported["models:/direct/1"] == "False True"  # scikit-learn, no MLflow
    assert imported["models:/absent/1"] == "False False"
    assert imported["models:/tensor/1"].startswith("True")


def _same_object(a: Any, b: Any, where: str = "model") -> None:
    """Deep equality of two loaded estimators: same types, same attributes, arrays equal in dtype and value."""
    assert type(a) is type(b), where
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, where
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for k in a:
            _same_object(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_object(x, y, f"{where}[{i}]")
    elif hasattr(a, "__dict__") and not isinstance(a, type):
        _same_object(vars(a), vars(b), where)
    else:
        assert a == b or (a != a and b != b), where


def test_skops_reader_builds_what_skops_builds(fitted: dict[str, Any], tmp_path: Path) -> None:
    """The estimators MLflow saves with skops most often are read by our reader into the same objects as
    ``skops.io.load`` (every attribute, every array's dtype and values)."""
    import skops.io
    from sklearn.naive_bayes import GaussianNB
    from sklearn.svm import SVC

    from wolt_jupyter.serving import skops_format

    x = fitted["x"]
    y = (x["a"] > 0).astype("int64")
    for model in (fitted["clf"], fitted["pipe"], fitted["reg"], SVC().fit(x, y), GaussianNB().fit(x, y)):
        path = tmp_path / f"{type(model).__name__}.skops"
        skops.io.dump(model, path)
        ours = skops_format.load(path)
        _same_object(ours, skops.io.load(path, trusted=skops.io.get_untrusted_types(file=path)))
        np.testing.assert_array_equal(ours.predict(x), model.predict(x))


def test_skops_reader_leaves_the_rest_to_skops(fitted: dict[str, Any], tmp_path: Path) -> None:
    """Node kinds it does not read (a tree), classes that are not public estimators (a private one, a class
    outside scikit-learn): NotPlain, before anything is built, and skops.io decides (and refuses what it
    does not trust)."""
    import zipfile

    import skops.io
    from sklearn.ensemble import RandomForestClassifier

    from wolt_jupyter.serving import skops_format

    x = fitted["x"]
    forest = tmp_path / "forest.skops"
    skops.io.dump(RandomForestClassifier(n_estimators=2, random_state=0).fit(x, x["a"] > 0), forest)
    with pytest.raises(skops_format.NotPlain, match="TreeNode"):
        skops_format.load(forest)
    for module, name in (
        ("subprocess", "Popen"),
        ("sklearn.neighbors._kd_tree", "KDTree"),
        ("sklearn.base", "BaseEstimator"),
    ):
        crafted = tmp_path / f"{name}.skops"
        schema = {
            "__class__": name,
            "__module__": module,
            "__loader__": "ObjectNode",
            "protocol": 2,
            "__id__": 1,
        }
        with zipfile.ZipFile(crafted, "w") as zf:
            zf.writestr("schema.json", json.dumps(schema))
        with pytest.raises(skops_format.NotPlain, match=name):
            skops_format.load(crafted)
        with pytest.raises(Exception, match=r"[Uu]ntrusted"):
            skops.io.load(crafted)  # what the direct loader falls back to refuses it as well
