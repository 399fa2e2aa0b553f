"""Experiments and runs on MLflow: a run around a block of code, autologging, the cell kept as an artifact.

The magic ``%%wolt_experiment`` and the Python API ``with wolt_jupyter.experiment(...)`` are the same code:
the magic only parses its arguments and hands the cell source in.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
import os
import re
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wolt_jupyter._display import Card
from wolt_jupyter._mlflow import configure, mlflow_client, private_artifacts, translated_errors, ui_base
from wolt_jupyter.autolog_plots import PlotJob, draw_later, plots_after_the_block
from wolt_jupyter.config import Settings, mask_url
from wolt_jupyter.errors import InvalidArgument

if TYPE_CHECKING:
    from mlflow import MlflowClient

CELL_ARTIFACT = "cell.py"
# frameworks mlflow.autolog() covers (its own table, mlflow/tracking/fluent.py): named on the card when installed
AUTOLOG_FRAMEWORKS = (
    "sklearn",
    "xgboost",
    "lightgbm",
    "statsmodels",
    "tensorflow",
    "keras",
    "lightning",
    "pytorch_lightning",
    "transformers",
    "setfit",
    "pyspark",
)


@dataclass
class _Session:
    """What this kernel remembers between cells: the last run and its experiment."""

    last_run_id: str | None = None
    last_experiment: str | None = None


_session = _Session()


def last_run_id() -> str | None:
    """The run this kernel's last experiment cell made (what ``%wolt_register`` registers by default)."""
    return _session.last_run_id


def forget_session() -> None:
    """Forget the last run and experiment, as a fresh kernel would (the tests start each case so)."""
    _session.last_run_id = None
    _session.last_experiment = None


# -- the run card ---------------------------------------------------------------------------------------------
@dataclass(repr=False)
class RunCard(Card, title="MLflow run", css_class="wolt-run-card"):
    """A finished (or running) MLflow run, as a notebook shows it."""

    run_id: str
    run_name: str
    experiment_id: str
    experiment_name: str
    status: str
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)
    artifact_uri: str = ""
    tracking_uri: str = ""
    ui_url: str | None = None
    log: list[str] = field(default_factory=list)  # MLflow's routine output while the run was made

    def _rows(self) -> list[tuple[str, Any]]:
        rows = [
            ("run", f"{self.run_name} ({self.run_id})"),
            ("experiment", f"{self.experiment_name} ({self.experiment_id})"),
            ("status", self.status),
            ("params", self.params),
            ("metrics", self.metrics),
            ("models", self.models),
            ("tracking", self.tracking_uri),
        ]
        if self.ui_url:
            rows.append(("MLflow UI", self.ui_url))
        return rows

    def _links(self) -> dict[str, str] | None:
        return {"MLflow UI": self.ui_url} if self.ui_url else None


def run_card(run_id: str, s: Settings | None = None) -> RunCard:
    import mlflow

    s = s or configure()
    c = mlflow_client(s)
    with translated_errors(s):
        run = c.get_run(run_id)
        exp = c.get_experiment(run.info.experiment_id)
        logged = mlflow.search_logged_models(
            experiment_ids=[run.info.experiment_id],
            filter_string=f"source_run_id = '{run_id}'",
            output_format="list",
        )
    base = ui_base(s)
    return RunCard(
        run_id=run_id,
        run_name=run.info.run_name or "",
        experiment_id=run.info.experiment_id,
        experiment_name=exp.name,
        status=run.info.status,
        params=dict(run.data.params),
        metrics=dict(run.data.metrics),
        models=[f"{m.name} ({m.model_id})" for m in logged],
        artifact_uri=run.info.artifact_uri or "",
        tracking_uri=mask_url(s.tracking_uri) or "",
        ui_url=f"{base}/#/experiments/{run.info.experiment_id}/runs/{run_id}" if base else None,
    )


# -- experiments and runs -------------------------------------------------------------------------------------
def ensure_experiment(name: str, s: Settings, c: MlflowClient | None = None) -> str:
    """The id of experiment ``name``, created if needed (artifacts under the state dir on the embedded store)."""
    if not name or not name.strip():
        raise InvalidArgument("experiment name is empty: give one, e.g. %%wolt_experiment churn")
    c = c or mlflow_client(s)
    with translated_errors(s):
        exp = c.get_experiment_by_name(name)
        if exp is not None:
            if exp.lifecycle_stage == "deleted":
                raise InvalidArgument(
                    f"experiment {name!r} is deleted: restore it in MLflow or choose another name"
                )
            return exp.experiment_id
        location = None
        if not s.tracking_is_server:
            # MLflow's own default is ./mlruns relative to the kernel's cwd: keep artifacts in the state dir instead
            location = (s.artifact_root / _safe_dirname(name)).resolve().as_uri()
        return c.create_experiment(name, artifact_location=location)


def _safe_dirname(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def git_commit(path: str | os.PathLike[str] | None = None) -> str | None:
    """The commit checked out where the notebook lives, when it is a git work tree."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=path or os.getcwd(),
            capture_output=True,
            text=True,
            timeout=2,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def source_tags(notebook: str | None) -> dict[str, str]:
    """MLflow's standard source tags: which notebook ran the run and at which git commit."""
    tags: dict[str, str] = {}
    if notebook:
        tags["mlflow.source.name"] = notebook
        tags["mlflow.source.type"] = "NOTEBOOK"
    where = Path(notebook).parent if notebook and Path(notebook).parent.is_dir() else None
    commit = git_commit(where)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def _autolog(enable: bool) -> list[str]:
    """MLflow's general autologging on/off: every framework it supports, including ones the cell imports
    later (it hooks their import). Returns the installed frameworks it covers, for the card."""
    import mlflow

    if enable:
        mlflow.autolog(silent=True, log_input_examples=False, log_model_signatures=True)
    else:
        mlflow.autolog(disable=True, silent=True)
    return [name for name in AUTOLOG_FRAMEWORKS if importlib.util.find_spec(name) is not None]


@contextmanager
def flavor_requirements() -> Iterator[None]:
    """Models logged in the block record their flavor's own pip requirements (e.g. scikit-learn and cloudpickle
    at the installed versions) instead of MLflow's inferred list: inferring costs a subprocess that imports
    MLflow and loads the model (~4 s here), most of an autologged ``fit``. MLflow's flavors call
    ``mlflow.models.infer_pip_requirements(path, flavor, fallback=defaults)``; in the block it answers the
    defaults. Those pin the installed versions, so MLflow's check of the requirements against the
    environment is skipped for them (see :func:`pins_installed`)."""
    import mlflow.models
    import mlflow.utils.environment as environment

    original = mlflow.models.infer_pip_requirements
    check_original = environment.warn_dependency_requirement_mismatches

    def defaults(model_uri: Any, flavor: Any, fallback: Any = None, *args: Any, **kwargs: Any) -> Any:
        if fallback is None:  # a caller with no defaults to offer: MLflow's inference, as without the block
            return original(model_uri, flavor, fallback, *args, **kwargs)
        return fallback

    def check_unpinned(model_requirements: list[str]) -> None:  # MLflow's parameter name: it replaces that
        # MLflow checks each requirement against the environment through a map of every installed
        # distribution's files (~0.4 s of CPU, once per kernel); pins of the installed versions (the flavor's
        # defaults, and MLflow's own pin) are satisfied by construction, so only the others go to its check
        rest = [r for r in model_requirements if not pins_installed(r)]
        if rest:
            check_original(rest)

    mlflow.models.infer_pip_requirements = defaults
    environment.warn_dependency_requirement_mismatches = check_unpinned
    try:
        yield
    finally:
        mlflow.models.infer_pip_requirements = original
        environment.warn_dependency_requirement_mismatches = check_original


def pins_installed(requirement: str) -> bool:
    """Whether ``requirement`` is ``name==version`` with exactly the installed distribution's version."""
    from importlib.metadata import PackageNotFoundError, version

    name, sep, pinned = (part.strip() for part in requirement.partition("=="))
    if not sep or not pinned or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        return False
    try:
        return version(name) == pinned
    except PackageNotFoundError:
        return False


@dataclass
class ExperimentRun:
    """Handle on the run a ``with experiment(...)`` block runs in; ``card`` is filled in when the block ends."""

    run_id: str
    experiment_id: str
    experiment_name: str
    autologged: list[str] = field(default_factory=list)
    card: RunCard | None = None

    def log(self, values: Mapping[str, Any] | None = None, /, **kwargs: Any) -> None:
        log(values, run_id=self.run_id, **kwargs)


@contextmanager
def experiment(
    name: str | None = None,
    *,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
    autolog: bool = True,
    source: str | None = None,
    notebook: str | None = None,
    infer_requirements: bool = False,
) -> Iterator[ExperimentRun]:
    """Run the block inside an MLflow run.

    MLflow's autologging is on for the block only (every framework it supports that is installed);
    ``source`` (the cell's code) is saved as the artifact ``cell.py``; ``notebook`` and the git commit become
    MLflow's source tags. Models logged in the block record their flavor's pip requirements unless
    ``infer_requirements`` (see :func:`flavor_requirements`). MLflow's routine output goes to the card's log.
    An exception in the block marks the run FAILED (KILLED for an interrupt) and propagates.
    """
    from wolt_jupyter._quiet import quiet, stderr_into

    captured: list[str] = []
    with quiet(captured):
        with stderr_into(captured):
            import mlflow

            s = configure()
            name = name or _session.last_experiment or s.default_experiment
            experiment_id = ensure_experiment(name, s)
            all_tags = {**source_tags(notebook), **dict(tags or {})}
            with translated_errors(s):
                active = mlflow.start_run(
                    experiment_id=experiment_id,
                    run_name=run_name,
                    tags=all_tags,
                    nested=mlflow.active_run() is not None,
                )
        run_id = active.info.run_id
        _session.last_run_id, _session.last_experiment = run_id, name
        handle = ExperimentRun(run_id=run_id, experiment_id=experiment_id, experiment_name=name)
        status = "FINISHED"
        requirements = contextlib.nullcontext() if infer_requirements else flavor_requirements()
        plots: list[PlotJob] = []
        try:
            with stderr_into(captured):
                if source is not None:
                    mlflow.log_text(source, CELL_ARTIFACT)
                if autolog:
                    handle.autologged = _autolog(True)
            with requirements, _plots_after(autolog) as plots:
                yield handle
        except KeyboardInterrupt:
            status = "KILLED"
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            with stderr_into(captured):
                if autolog:
                    _autolog(False)
                mlflow.end_run(status)
                private_artifacts(s, active.info.artifact_uri)  # its artifacts and models: 0600
                try:
                    handle.card = run_card(run_id, s)
                except Exception:
                    if status == "FINISHED":
                        raise  # otherwise the block's own exception is the one to see
                finally:
                    _draw_later(plots, active.info, s, captured)
    if handle.card is not None:
        handle.card.log = captured


def _plots_after(autolog: bool) -> contextlib.AbstractContextManager[list[PlotJob]]:
    """Autologged classifiers' plots drawn after the block (see :mod:`wolt_jupyter.autolog_plots`)."""
    return plots_after_the_block() if autolog else contextlib.nullcontext([])


def _draw_later(plots: list[PlotJob], run: Any, s: Settings, log_lines: list[str]) -> None:
    """Hand the block's plots to the helper; a failure is a line of the card's log, not the cell's error."""
    if not plots:
        return
    try:
        uris = {run.run_id: run.artifact_uri}
        for job in plots:  # a fit may log to another run (e.g. a search's child run)
            if job.run_id not in uris:
                uris[job.run_id] = mlflow_client(s).get_run(job.run_id).info.artifact_uri
        draw_later(plots, uris, s.tracking_uri, s.home)
    except Exception as exc:
        log_lines.append(f"WARNING {__name__}: autologged plots not drawn: {type(exc).__name__}: {exc}")


def last_run() -> RunCard | None:
    """The card of the last run this kernel started, if any."""
    return run_card(_session.last_run_id) if _session.last_run_id else None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def log(
    values: Mapping[str, Any] | None = None,
    /,
    *,
    run_id: str | None = None,
    step: int | None = None,
    **kwargs: Any,
) -> RunCard:
    """Log ``key=value`` pairs: numbers become metrics, everything else params.

    Goes to ``run_id``, else the active run, else the last run this kernel started (a finished run can still
    take metrics and new params).
    """
    import mlflow

    items = {**dict(values or {}), **kwargs}
    if not items:
        raise InvalidArgument(
            "nothing to log: give KEY=VALUE pairs, e.g. %wolt_log accuracy=0.93 notes=baseline"
        )
    s = configure()
    active = mlflow.active_run()
    run_id = run_id or (active.info.run_id if active else None) or _session.last_run_id
    if run_id is None:
        raise InvalidArgument("no run to log to: run a %%wolt_experiment cell first, or pass --run RUN_ID")
    c = mlflow_client(s)
    with translated_errors(s):
        for key, value in items.items():
            if _is_number(value):
                if math.isnan(value) or math.isinf(value):
                    raise InvalidArgument(f"metric {key}={value} is not finite; log a finite number")
                c.log_metric(run_id, key, float(value), step=step or 0)
            else:
                c.log_param(run_id, key, str(value))
    return run_card(run_id, s)


def parse_value(text: str) -> Any:
    """``KEY=VALUE`` values from a magic line: ints and floats become numbers, the rest stays text."""
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def parse_pairs(tokens: list[str], *, example: str) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` tokens; a malformed one is an :class:`InvalidArgument` naming the fix."""
    pairs: dict[str, Any] = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key.strip():
            raise InvalidArgument(f"{token!r} is not KEY=VALUE; write e.g. {example}")
        pairs[key.strip()] = parse_value(value.strip())
    return pairs
