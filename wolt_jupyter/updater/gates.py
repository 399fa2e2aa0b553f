"""The two gates before live traffic: measurements only; :func:`wolt_jupyter.updater.decide.decide` judges them.

- **Offline**: candidate and champion (MLflow pyfunc models) predict the same rows of a held-out dataset; each
  policy metric is computed for both, and the candidate's one-row prediction latency is timed.
- **Replay**: the last N requests the deployment logged (the response log) are sent through the candidate
  in-process, one ``predict`` per request as live traffic would: its errors and latency, how often it answers
  like the champion did (classes) or how far from it (numbers), and where feedback labels exist, the model
  metric of both on exactly those requests.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wolt_jupyter.errors import InvalidArgument, one_line
from wolt_jupyter.updater.decide import OfflineResult, ReplayResult
from wolt_jupyter.updater.observe import numbers
from wolt_jupyter.updater.policy import Metric, OfflineGate, ReplayGate, sklearn_metric

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from wolt_jupyter.monitoring.estimate import Reference

LATENCY_ROWS = 200  # one-row predictions timed for the latency p99


# -- loading --------------------------------------------------------------------------------------------------
def load_dataset(dataset: Any, target: str, max_rows: int | None = None) -> tuple[pd.DataFrame, pd.Series]:
    """Features and labels from a DataFrame, a .parquet/.csv path, an MLflow dataset or an artifact URI."""
    import pandas as pd

    frame: pd.DataFrame
    if isinstance(dataset, pd.DataFrame):
        frame = dataset
    elif isinstance(dataset, (str, Path)):
        frame = _read_table(_local_path(str(dataset)))
    elif hasattr(dataset, "df") and isinstance(dataset.df, pd.DataFrame):  # mlflow.data PandasDataset
        frame = dataset.df
    elif hasattr(dataset, "to_pandas"):
        frame = dataset.to_pandas()
    else:
        raise InvalidArgument(
            f"offline.dataset: cannot read a {type(dataset).__name__}; give a DataFrame, a .parquet/.csv path "
            "or an MLflow dataset (mlflow.data.from_pandas)"
        )
    if target not in frame.columns:
        raise InvalidArgument(
            f"offline.target {target!r} is not a column of the dataset; columns: {', '.join(map(str, frame.columns))}"
        )
    if max_rows is not None and len(frame) > max_rows:
        frame = frame.sample(max_rows, random_state=0)
    if frame.empty:
        raise InvalidArgument("offline.dataset has no rows")
    return frame.drop(columns=[target]), frame[target]


def _local_path(text: str) -> Path:
    if text.startswith(("runs:/", "models:/", "mlflow-artifacts:/")) or "://" in text:
        import mlflow

        from wolt_jupyter._mlflow import configure, translated_errors

        s = configure()
        with translated_errors(s):
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=text, tracking_uri=s.tracking_uri))
    path = Path(text).expanduser()
    if not path.is_file():
        raise InvalidArgument(f"offline.dataset {text!r} does not exist")
    return path


def _read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    if path.suffix.lower() == ".csv":
        return pd.read_csv(path)
    if path.suffix.lower() in (".parquet", ".pq"):
        return pd.read_parquet(path)
    raise InvalidArgument(f"offline.dataset {str(path)!r}: only .parquet and .csv files can be read")


class LoadedModel:
    """A registered model version loaded once: its pyfunc, and for ranking metrics its class probabilities."""

    def __init__(self, uri: str) -> None:
        import mlflow.pyfunc

        from wolt_jupyter._mlflow import configure, translated_errors

        self.uri = uri
        s = configure()
        with translated_errors(s):
            self.pyfunc = mlflow.pyfunc.load_model(uri)
        self._native: Any = None

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return _first_column(self.pyfunc.predict(X))

    def scores(self, X: pd.DataFrame) -> np.ndarray:
        """Positive-class probability (binary) or the probability matrix, when the flavor offers them; else the
        plain prediction (a regressor's output is its score)."""
        found = self.probabilities(X)
        if found is not None:
            proba = found[0]
            return proba[:, 1] if proba.shape[1] == 2 else proba
        return self.predict(X)

    def probabilities(self, X: pd.DataFrame) -> tuple[np.ndarray, list[Any]] | None:
        """Class probabilities and the class of each column, when the flavor offers them."""
        import numpy as np

        native = self._native_model()
        if native is None or not hasattr(native, "predict_proba"):
            return None
        proba = np.asarray(native.predict_proba(X))
        return proba, list(getattr(native, "classes_", range(proba.shape[1])))

    def _native_model(self) -> Any:
        if self._native is None:
            flavors = self.pyfunc.metadata.flavors
            if "sklearn" in flavors:
                import mlflow.sklearn

                self._native = mlflow.sklearn.load_model(self.uri)
            else:
                self._native = False
        return self._native or None


def _first_column(raw: Any) -> np.ndarray:
    import numpy as np
    import pandas as pd

    if isinstance(raw, pd.DataFrame):
        raw = raw.iloc[:, 0]
    if isinstance(raw, dict):
        raw = next(iter(raw.values()))
    arr = np.asarray(raw)
    return arr.reshape(arr.shape[0], -1)[:, 0] if arr.ndim > 1 else arr


def _metric_value(
    metric: Metric, model: LoadedModel, X: pd.DataFrame, y: pd.Series, preds: np.ndarray
) -> float:
    values = model.scores(X) if metric.needs_scores else preds
    try:
        return metric.compute(y, values)
    except Exception:  # a metric that cannot be computed here is a missing value, judged as such
        return math.nan


def p99(values: list[float]) -> float | None:
    import numpy as np

    return float(np.percentile(values, 99)) if values else None


# -- the offline gate -----------------------------------------------------------------------------------------
def offline_gate(gate: OfflineGate, candidate_uri: str, champion_uri: str | None) -> OfflineResult:
    """Evaluate the candidate (and the champion, when there is one) on the gate's dataset."""
    X, y = load_dataset(gate.dataset, gate.target, gate.max_rows)
    candidate = LoadedModel(candidate_uri)
    try:
        preds = candidate.predict(X)
    except Exception as exc:
        return OfflineResult(rows=len(X), candidate={}, error=one_line(exc))
    cand = {m.name: _metric_value(m, candidate, X, y, preds) for m in gate.metrics}
    champ = None
    if champion_uri is not None:
        champion = LoadedModel(champion_uri)
        base_preds = champion.predict(X)
        champ = {m.name: _metric_value(m, champion, X, y, base_preds) for m in gate.metrics}
    return OfflineResult(
        rows=len(X),
        candidate=cand,
        champion=champ,
        latency_p99_ms=p99(_one_row_latencies(candidate, X)),
    )


def offline_reference(gate: OfflineGate, uri: str) -> Reference | None:
    """The model's class probabilities on the offline dataset, with its labels: what its estimated accuracy is
    calibrated on (a held-out set, as CBPE wants). None for a model without class probabilities."""
    from wolt_jupyter.monitoring.estimate import Reference

    X, y = load_dataset(gate.dataset, gate.target, gate.max_rows)
    model = LoadedModel(uri)
    found = model.probabilities(X)
    if found is None:
        return None
    proba, classes = found
    return Reference.from_labels(proba, y.tolist(), classes, pred=model.predict(X))


def _one_row_latencies(model: LoadedModel, X: pd.DataFrame, rows: int = LATENCY_ROWS) -> list[float]:
    """Milliseconds of ``predict`` on one row at a time, as a live request sees it (after one warm-up)."""
    sample = X.head(rows)
    model.pyfunc.predict(sample.iloc[[0]])
    out = []
    for i in range(len(sample)):
        row = sample.iloc[[i]]
        t0 = time.perf_counter()
        model.pyfunc.predict(row)
        out.append((time.perf_counter() - t0) * 1000.0)
    return out


# -- the replay gate ------------------------------------------------------------------------------------------
def logged_requests(
    deployment: str, requests: int, *, variant: str | None = None, url: str | None = None
) -> pd.DataFrame:
    """The last ``requests`` live (not shadow) requests the deployment answered successfully, one row per input
    row, oldest first. ``variant``: only those the champion's variant answered."""
    from wolt_jupyter.responses import read_frame

    # shadow copies share the window: read twice the rows, keep the live ones
    log = read_frame(deployment, variant=variant, url=url, limit=2 * requests)
    if log.empty:
        return log
    log = log[~log["shadow"] & (log["status"] == 200)]
    keep = list(dict.fromkeys(log["id"]))[-requests:]
    return log[log["id"].isin(set(keep))]


def replay_gate(
    gate: ReplayGate,
    deployment: str,
    candidate_uri: str,
    *,
    variant: str | None = None,
    url: str | None = None,
) -> ReplayResult:
    """Replay the deployment's last logged requests through the candidate and compare with the answers."""
    import numpy as np

    log = logged_requests(deployment, gate.requests, variant=variant, url=url)
    if log.empty:
        return ReplayResult(requests=0)
    inputs = [c for c in log.columns if str(c).startswith("input")]
    outputs = [c for c in log.columns if str(c).startswith("output")]
    if not inputs:
        raise InvalidArgument(f"the response log of {deployment!r} has no inputs to replay")
    features = {c: c.split(".", 1)[1] if "." in c else c for c in inputs}
    candidate = LoadedModel(candidate_uri)
    errors, latencies = 0, []
    first_error: str | None = None
    answers: list[np.ndarray] = []
    answered_rows: list[Any] = []
    for _, request in log.groupby("id", sort=False):
        X = request[inputs].rename(columns=features).reset_index(drop=True)
        t0 = time.perf_counter()
        try:
            pred = candidate.predict(X)
            if len(pred) != len(X):
                raise ValueError(f"{len(pred)} outputs for {len(X)} rows")
        except Exception as exc:
            errors += 1
            first_error = first_error or one_line(exc)
            continue
        latencies.append((time.perf_counter() - t0) * 1000.0)
        answers.append(pred)
        answered_rows.append(request.index)
    n_requests = log["id"].nunique()
    result: dict[str, Any] = {
        "requests": n_requests,
        "errors": errors,
        "latency_p99_ms": p99(latencies),
        "first_error": first_error,
    }
    if answers and outputs:
        rows = log.loc[np.concatenate(answered_rows)]
        cand = np.concatenate(answers)
        champ = numbers(rows[outputs[0]])
        cand_num = numbers(cand)
        both = np.isfinite(champ) & np.isfinite(cand_num)
        if both.any():
            a, b = cand_num[both], champ[both]
            if np.all(np.mod(a, 1) == 0) and np.all(np.mod(b, 1) == 0):
                result["agreement"] = float(np.mean(a == b))
            result["mean_abs_difference"] = float(np.mean(np.abs(a - b)))
        elif len(cand):  # labels that are not numbers (strings): agreement only
            result["agreement"] = float(
                np.mean(np.asarray(cand, dtype=object) == rows[outputs[0]].to_numpy(dtype=object))
            )
        if gate.metric is not None and "ground_truth" in rows:
            labelled = rows["ground_truth"].notna().to_numpy()
            if labelled.any():
                fn = sklearn_metric(gate.metric)[0]
                y = rows["ground_truth"].to_numpy()[labelled]
                result["labelled"] = int(labelled.sum())
                result["candidate_metric"] = _safe_metric(fn, y, cand[labelled])
                result["champion_metric"] = _safe_metric(fn, y, rows[outputs[0]].to_numpy()[labelled])
    return ReplayResult(**result)


def _safe_metric(fn: Any, y: Any, pred: Any) -> float:
    try:
        return float(fn(y, pred))
    except Exception:
        return math.nan
