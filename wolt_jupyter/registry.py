"""MLflow model registry: register a model (from a run, or a fitted estimator logged on the spot), set aliases,
list what is registered.

Registry stages are gone in MLflow 3; aliases (``champion``, ``challenger``) are how a version is named.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from wolt_jupyter import tracking
from wolt_jupyter._display import Card
from wolt_jupyter._mlflow import configure, mlflow_client, private_artifacts, translated_errors, ui_base
from wolt_jupyter.config import Settings, mask_url
from wolt_jupyter.errors import InvalidArgument, NotFound, one_line

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

MODEL_ARTIFACT = "model"
MODEL_COLUMNS = ["name", "version", "aliases", "status", "run_id", "created", "source"]
_ALIAS = re.compile(r"[A-Za-z0-9_-]{1,255}")
_RESERVED_ALIAS = re.compile(r"(latest|v\d+)", re.IGNORECASE)


def check_model_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidArgument("a registered model needs a name: --name NAME")
    if any(ch in name for ch in "/:@") or name != name.strip():
        raise InvalidArgument(
            f"model name {name!r} cannot contain '/', ':', '@' or surrounding spaces (they break models:/ URIs)"
        )
    return name


def check_alias(alias: str) -> str:
    if not _ALIAS.fullmatch(alias or "") or _RESERVED_ALIAS.fullmatch(alias):
        raise InvalidArgument(
            f"alias {alias!r} is not allowed: use letters, digits, '_' and '-' (not 'latest' or 'v<number>'), "
            "e.g. champion"
        )
    return alias


@dataclass(repr=False)
class ModelVersionCard(Card, title="Registered model version", css_class="wolt-model-card"):
    """One registered model version, as a notebook shows it."""

    name: str
    version: str
    aliases: list[str] = field(default_factory=list)
    run_id: str | None = None
    source: str = ""
    status: str = ""
    signature_inputs: str | None = None
    signature_outputs: str | None = None
    ui_url: str | None = None
    log: list[str] = field(default_factory=list)  # MLflow's routine output while the version was made

    @property
    def uri(self) -> str:
        """The pinned URI to load or deploy exactly this version."""
        return f"models:/{self.name}/{self.version}"

    def _rows(self) -> list[tuple[str, Any]]:
        rows = [
            ("model", f"{self.name} version {self.version}"),
            ("uri", self.uri),
            ("aliases", self.aliases),
            ("status", self.status),
            ("source run", self.run_id),
            ("source", self.source),
            ("inputs", self.signature_inputs or "no signature"),
            ("outputs", self.signature_outputs),
        ]
        if self.ui_url:
            rows.append(("MLflow UI", self.ui_url))
        return rows

    def _links(self) -> dict[str, str] | None:
        return {"MLflow UI": self.ui_url} if self.ui_url else None


def version_card(name: str, version: str | int, s: Settings | None = None) -> ModelVersionCard:
    from mlflow.models import get_model_info

    s = s or configure()
    c = mlflow_client(s)
    with translated_errors(s):
        mv = c.get_model_version(name, str(version))
        aliases = sorted(
            a for a, v in c.get_registered_model(name).aliases.items() if str(v) == str(mv.version)
        )
        try:
            sig = get_model_info(f"models:/{name}/{mv.version}").signature
        except Exception as exc:  # a model without an MLmodel file still deserves a card, said so in the log
            log.warning("models:/%s/%s: no signature shown (%s)", name, mv.version, one_line(exc))
            sig = None
    base = ui_base(s)
    return ModelVersionCard(
        name=name,
        version=str(mv.version),
        aliases=aliases,
        run_id=mv.run_id,
        source=mv.source or "",
        status=mv.status or "",
        signature_inputs=_schema_text(sig.inputs) if sig is not None else None,
        signature_outputs=_schema_text(sig.outputs) if sig is not None and sig.outputs is not None else None,
        ui_url=f"{base}/#/models/{name}/versions/{mv.version}" if base else None,
    )


def _schema_text(schema: Any) -> str:
    """``name: type`` per column; a tensor spec as ``tensor(dtype, shape)``."""
    parts = []
    for col in schema.to_dict():
        kind = col.get("type", "?")
        if kind == "tensor":
            spec = col.get("tensor-spec", {})
            kind = f"tensor({spec.get('dtype', '?')}, {tuple(spec.get('shape', ()))})"
        parts.append(f"{col['name']}: {kind}" if col.get("name") else kind)
    return ", ".join(parts)


# -- logging an estimator on the spot -------------------------------------------------------------------------
# the package a model object's class comes from -> the MLflow flavor that logs it (mlflow.<flavor>.log_model)
FLAVOR_OF_PACKAGE = {
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    "catboost": "catboost",
    "sklearn": "sklearn",
    "torch": "pytorch",
    "onnx": "onnx",
    "statsmodels": "statsmodels",
    "keras": "keras",
    "tf_keras": "tensorflow",
    "tensorflow": "tensorflow",
    "spacy": "spacy",
    "sentence_transformers": "sentence_transformers",
    "transformers": "transformers",
    "prophet": "prophet",
    "pmdarima": "pmdarima",
    "h2o": "h2o",
    "paddle": "paddle",
}
# flavors whose models answer ``predict(X)`` in the notebook: the signature comes from that answer
_PREDICTS = ("sklearn", "xgboost", "lightgbm", "catboost")


def _flavor_of(model: Any) -> Any:
    """The MLflow flavor module that can log ``model``: the first class in its MRO whose package has an installed
    MLflow flavor (so an XGBClassifier is XGBoost, a third-party scikit-learn estimator scikit-learn), or an
    :class:`InvalidArgument` naming the flavors tried."""
    import importlib
    import importlib.util

    from mlflow.pyfunc import PythonModel

    if isinstance(model, PythonModel):
        return importlib.import_module("mlflow.pyfunc")
    for cls in type(model).__mro__:
        flavor = FLAVOR_OF_PACKAGE.get(cls.__module__.split(".")[0])
        if flavor and importlib.util.find_spec(f"mlflow.{flavor}") is not None:
            return importlib.import_module(f"mlflow.{flavor}")
    installed = [p for p in FLAVOR_OF_PACKAGE if importlib.util.find_spec(p) is not None]
    raise InvalidArgument(
        f"cannot log a {type(model).__module__}.{type(model).__name__}: no MLflow flavor takes it. Tried the "
        f"flavors for {', '.join(FLAVOR_OF_PACKAGE)} and mlflow.pyfunc.PythonModel (installed here: "
        f"{', '.join(installed) or 'none'}); wrap it in an mlflow.pyfunc.PythonModel, or log it yourself inside "
        "%%wolt_experiment and register with --run RUN_ID"
    )


def _signature_via_pyfunc(flavor: Any, model: Any, input_example: Any) -> Any:
    """The signature of a model whose object has no ``predict``: saved aside, loaded as the pyfunc the runtime
    will serve, asked to predict the example."""
    import tempfile
    from pathlib import Path

    import mlflow.pyfunc
    from mlflow.models import infer_signature

    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "model")
        try:
            flavor.save_model(model, path)
            prediction = mlflow.pyfunc.load_model(path).predict(input_example)
        except Exception as exc:
            raise InvalidArgument(
                f"the {flavor.__name__} model cannot predict on the input example ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}); pass rows shaped like its inputs"
            ) from None
    return infer_signature(input_example, prediction)


def _model_arg(flavor: Any) -> str:
    """The name of ``log_model``'s model parameter (``sk_model``, ``pytorch_model``, ``onnx_model``, …)."""
    import inspect

    return next(iter(inspect.signature(flavor.log_model).parameters))


def _check_fitted(model: Any) -> None:
    if type(model).__module__.split(".")[0] != "sklearn":
        return
    from sklearn.exceptions import NotFittedError
    from sklearn.utils.validation import check_is_fitted

    try:
        check_is_fitted(model)
    except NotFittedError:
        raise InvalidArgument(
            f"the {type(model).__name__} is not fitted: call .fit(X, y) before registering it"
        ) from None


def _log_estimator(model: Any, input_example: Any, experiment: str | None) -> str:
    """Log ``model`` (signature inferred from the input example) in a run; return its model URI."""
    import mlflow
    from mlflow.models import infer_signature

    flavor = _flavor_of(model)
    short = flavor.__name__.rpartition(".")[2]
    _check_fitted(model)
    signature = None
    if input_example is not None and (short in _PREDICTS or short == "pyfunc"):
        try:
            if short == "pyfunc":
                prediction = model.predict(None, input_example)
            else:
                prediction = model.predict(input_example)
        except Exception as exc:
            raise InvalidArgument(
                f"the model cannot predict on the input example ({type(exc).__name__}: {exc}); pass rows shaped "
                "like the training features"
            ) from None
        signature = infer_signature(input_example, prediction)
    elif input_example is not None:  # no predict() in the notebook (torch, ONNX, ...): ask the flavor's pyfunc
        signature = _signature_via_pyfunc(flavor, model, input_example)
    save_kwargs: dict[str, Any] = {"name": MODEL_ARTIFACT, "input_example": input_example}
    if signature is not None:
        save_kwargs["signature"] = signature
    if short == "pyfunc":
        save_kwargs["python_model"] = model
    else:
        save_kwargs[_model_arg(flavor)] = model
        # the flavor's own requirements are exact for a plain model; inferring them costs a subprocess that
        # loads the model (~10 s on a busy machine)
        defaults = getattr(flavor, "get_default_pip_requirements", None)
        if defaults is not None:
            save_kwargs["pip_requirements"] = defaults()

    if mlflow.active_run() is not None:  # inside %%wolt_experiment: attach to that run
        return flavor.log_model(**save_kwargs).model_uri
    with tracking.experiment(experiment, run_name="register", autolog=False):
        info = flavor.log_model(**save_kwargs)
    return info.model_uri



def _model_of_run(run_id: str, s: Settings, c: MlflowClient) -> str:
    """The URI of the (latest) model a run logged, e.g. by autologging."""
    import mlflow

    with translated_errors(s):
        run = c.get_run(run_id)
        logged = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run_id}'",
            output_format="list",
        )
    if not logged:
        raise InvalidArgument(
            f"run {run_id} logged no model: fit a model inside %%wolt_experiment (autologging saves it), or "
            "register a fitted variable: %wolt_register model --name NAME"
        )
    latest = max(logged, key=lambda m: m.creation_timestamp or 0)
    return f"models:/{latest.model_id}"


# -- public API -----------------------------------------------------------------------------------------------
def register(
    model: Any = None,
    *,
    name: str,
    aliases: Iterable[str] = (),
    run_id: str | None = None,
    input_example: Any = None,
    experiment: str | None = None,
    description: str | None = None,
    reference: Any = None,
) -> ModelVersionCard:
    """Register a model version and point ``aliases`` at it.

    With ``model`` (a fitted estimator) it is logged first, its signature inferred from ``input_example``;
    otherwise the model logged by ``run_id`` (default: the last run this kernel started) is registered.
    ``reference`` (the training inputs, a DataFrame) is sampled and kept with the version, as the baseline
    drift is measured against. MLflow's routine output ("Created version '2' …") goes to the card's log.
    """
    from wolt_jupyter._quiet import quiet, stderr_into

    captured: list[str] = []
    with quiet(captured), stderr_into(captured):
        card = _register(model, name, aliases, run_id, input_example, experiment, description, reference)
    card.log = captured
    return card


def _register(
    model: Any,
    name: str,
    aliases: Iterable[str],
    run_id: str | None,
    input_example: Any,
    experiment: str | None,
    description: str | None,
    reference: Any,
) -> ModelVersionCard:
    import mlflow

    check_model_name(name)
    aliases = [check_alias(a) for a in aliases]
    if model is not None and run_id is not None:
        raise InvalidArgument("give either a model variable or --run RUN_ID, not both")
    s = configure()
    c = mlflow_client(s)
    if model is not None:
        model_uri = _log_estimator(model, input_example, experiment)
    else:
        run_id = run_id or tracking.last_run_id()
        if run_id is None:
            raise InvalidArgument(
                "nothing to register: run a %%wolt_experiment cell that fits a model, pass --run RUN_ID, "
                "or pass a fitted model variable: %wolt_register model --name NAME"
            )
        model_uri = _model_of_run(run_id, s, c)
    with translated_errors(s):
        mv = mlflow.register_model(model_uri, name)
        if description:
            c.update_model_version(name, mv.version, description=description)
        for alias in aliases:
            c.set_registered_model_alias(name, alias, mv.version)
        if reference is not None:
            save_reference(name, mv.version, reference, s)
    return version_card(name, mv.version, s)


def models(name: str | None = None) -> pd.DataFrame:
    """Registered models with their versions and aliases, one row per version, newest first."""
    import pandas as pd

    if name is not None:
        check_model_name(name)
    s = configure()
    c = mlflow_client(s)
    rows = []
    with translated_errors(s):
        registered = list(_all_registered(c))
        if name is not None:
            known = ", ".join(m.name for m in registered) or "none yet"
            registered = [m for m in registered if m.name == name]
            if not registered:
                raise NotFound(f"no registered model named {name!r}; registered: {known}")
        for rm in registered:
            by_version: dict[str, list[str]] = {}
            for alias, version in (rm.aliases or {}).items():
                by_version.setdefault(str(version), []).append(alias)
            for mv in c.search_model_versions(f"name = '{quote_filter_value(rm.name)}'"):
                rows.append(
                    {
                        "name": rm.name,
                        "version": int(mv.version),
                        "aliases": ", ".join(sorted(by_version.get(str(mv.version), []))),
                        "status": mv.status,
                        "run_id": mv.run_id,
                        "created": pd.to_datetime(mv.creation_timestamp, unit="ms", utc=True),
                        "source": mv.source,
                    }
                )
    frame = pd.DataFrame(rows, columns=MODEL_COLUMNS)
    if not frame.empty:
        frame = frame.sort_values(["name", "version"], ascending=[True, False], ignore_index=True)
    return frame


def grouped_models(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """``models()`` rows (one per version) grouped per model as JSON-ready dicts, newest version first, with
    the alias map; times in epoch milliseconds. The lab extension and the widget panel read this shape."""
    out: dict[str, dict[str, Any]] = {}
    for row in frame.to_dict("records"):
        model = out.setdefault(row["name"], {"name": row["name"], "aliases": {}, "versions": []})
        aliases = [a for a in (row["aliases"] or "").split(", ") if a]
        for alias in aliases:
            model["aliases"][alias] = str(row["version"])
        created = row["created"]
        model["versions"].append(
            {
                "version": str(row["version"]),
                "uri": f"models:/{row['name']}/{row['version']}",
                "aliases": aliases,
                "status": row["status"],
                "run_id": row["run_id"],
                "created": None if created is None else int(created.timestamp() * 1000),
                "source": row["source"],
            }
        )
    return list(out.values())


def _all_registered(c: MlflowClient) -> Iterable[Any]:
    token = None
    while True:
        page = c.search_registered_models(max_results=200, page_token=token)
        yield from page
        token = page.token
        if not token:
            return


def quote_filter_value(name: str) -> str:
    """``name`` safe inside a single-quoted MLflow search filter."""
    return name.replace("'", "\\'")


# -- pinning (deploy time) ------------------------------------------------------------------------------------
_MODELS_URI = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>[^/]+)|@(?P<alias>[^/]+))")


def pin(uri: str) -> str:
    """``models:/NAME@ALIAS`` or ``models:/NAME/latest`` → ``models:/NAME/VERSION``, checked to exist.

    A deployment records the pinned URI, so moving an alias later never changes what runs silently.
    Other URIs (``runs:/…``, local paths) are returned as they are.
    """
    match = _MODELS_URI.fullmatch(uri)
    if not match:
        return uri
    name, version, alias = match["name"], match["version"], match["alias"]
    s = configure()
    c = mlflow_client(s)
    with translated_errors(s):
        try:
            if alias:
                mv = c.get_model_version_by_alias(name, alias)
            elif version == "latest":
                versions = c.search_model_versions(f"name = '{quote_filter_value(name)}'")
                if not versions:
                    raise NotFound(f"registered model {name!r} has no versions")
                mv = max(versions, key=lambda v: int(v.version))
            else:
                mv = c.get_model_version(name, version)
        except NotFound:
            raise
        except Exception as exc:
            if getattr(exc, "error_code", "") in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                what = f"alias {alias!r}" if alias else f"version {version!r}"
                raise NotFound(
                    f"{uri}: model {name!r} has no {what} in the registry ({mask_url(s.registry_uri)})"
                ) from None
            raise
    return f"models:/{name}/{mv.version}"


def pinned_version(uri: str) -> tuple[str, str] | None:
    """``(name, version)`` of a pinned ``models:/NAME/VERSION`` URI; None for aliases and other URIs."""
    match = _MODELS_URI.fullmatch(uri)
    if not match or not match["version"] or not match["version"].isdigit():
        return None
    return match["name"], match["version"]


_DOWNLOAD_URIS: dict[tuple[str, str, str], str] = {}


def download_uri(pinned: str) -> str:
    """Where a pinned version's artifacts are stored (what Seldon's and KServe's initializers download, what
    a local deploy reads the MLmodel from and copies). Asked once per registry and version in a process: a
    version's artifacts never move, and each question costs two registry queries."""
    version = pinned_version(pinned)
    if version is None:
        return pinned
    s = configure()
    key = (s.registry_uri, *version)
    if key not in _DOWNLOAD_URIS:
        with translated_errors(s):
            _DOWNLOAD_URIS[key] = mlflow_client(s).get_model_version_download_uri(*version)
    return _DOWNLOAD_URIS[key]


# -- drift reference --------------------------------------------------------------------------------------------
REFERENCE_TAG = "wolt.reference"
REFERENCE_ROWS = 10_000


def save_reference(name: str, version: str | int, data: Any, s: Settings | None = None) -> str:
    """Keep a sample (at most 10,000 rows) of the training inputs with a model version, for drift checks.

    Stored as a Parquet artifact of the version's source run and named by the version tag ``wolt.reference``.
    """
    import pandas as pd

    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    if frame.empty:
        raise InvalidArgument("the reference sample is empty: pass the training inputs (a DataFrame)")
    if len(frame) > REFERENCE_ROWS:
        frame = frame.sample(REFERENCE_ROWS, random_state=0)
    frame.columns = [str(c) for c in frame.columns]
    s = s or configure()
    c = mlflow_client(s)
    with translated_errors(s):
        mv = c.get_model_version(name, str(version))
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}-v{mv.version}.parquet"
            frame.to_parquet(path, index=False)
            if mv.run_id:
                c.log_artifact(mv.run_id, str(path), artifact_path="reference")
                private_artifacts(s, c.get_run(mv.run_id).info.artifact_uri)
                uri = f"runs:/{mv.run_id}/reference/{path.name}"
            else:
                raise InvalidArgument(
                    f"model {name} version {mv.version} has no source run to keep a reference in"
                )
        c.set_model_version_tag(name, str(mv.version), REFERENCE_TAG, uri)
    return uri


def load_reference(name: str, version: str | int) -> pd.DataFrame:
    """The reference sample kept with a model version; :class:`NotFound` when none was kept."""
    import mlflow
    import pandas as pd

    s = configure()
    with translated_errors(s):
        mv = mlflow_client(s).get_model_version(name, str(version))
        uri = (mv.tags or {}).get(REFERENCE_TAG)
        if not uri:
            raise NotFound(
                f"model {name} version {mv.version} has no reference sample: register it with "
                "--reference X_train (the training inputs) to measure drift"
            )
        local = mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=s.tracking_uri)
    return pd.read_parquet(local)
