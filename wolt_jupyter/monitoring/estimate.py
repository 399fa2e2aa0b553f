"""A classifier's accuracy estimated from its predicted probabilities, before (or without) labels.

The method is NannyML's confidence-based performance estimation (CBPE, "Estimation of performance of the
monitored model", NannyML documentation): when a model's probabilities are calibrated, the probability that
a prediction is right *is* its expected correctness, so the mean of those probabilities over a window is the
expected accuracy of the window, and the expected confusion matrix gives F1 and ROC AUC. It holds under
covariate shift (P(x) changes, P(y|x) does not); it fails under concept drift (P(y|x) changes), which no
label-free method can see.

Calibration, as CBPE does it: on a *reference* set with labels (the arm's labelled rows, or a held-out
dataset -- not the training set), fit an isotonic map from score to observed frequency, and use it only where
the probabilities are not calibrated already. NannyML decides that by cross-validated expected calibration
error; here Cox's calibration test does (:func:`miscalibrated`): a cross-validated Brier comparison, tried
first, left a model that ignores one of two features uncalibrated on 2,000 reference rows and 2 points too
optimistic. Binary models calibrate the positive class's probability, as CBPE does; multiclass models the
confidence of the predicted class against being right (top-label calibration, Gupta & Ramdas, ICLR 2022),
which is what accuracy needs, instead of NannyML's per-class maps.

The isotonic fit is the pool-adjacent-violators algorithm (Ayer et al., 1955), written here so that the
calibration's blocks are at hand for the uncertainty: the estimate is a weighted sum of block means of the
reference, each with a binomial variance, and that adds to the sampling variance of the analysed rows.

Everything works on column indices: ``proba`` is (rows, classes), ``pred`` the column of each row's
predicted class, ``truth`` the column of its true class (-1: a class the model has no column for).
:func:`estimate_from_log` maps a response log's labels to columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wolt_jupyter.responses.record import PROBA_OUTPUT

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

MIN_CALIBRATION = 30  # labelled rows below which no calibration map is fitted (it would be noise)


@dataclass(frozen=True)
class Reference:
    """Labelled rows of one model: its probabilities, predicted and true class columns."""

    proba: np.ndarray
    pred: np.ndarray
    truth: np.ndarray

    def __len__(self) -> int:
        return len(self.truth)

    @classmethod
    def of(cls, proba: Any, truth: Any, pred: Any = None) -> Reference:
        import numpy as np

        p = _matrix(proba)
        return cls(p, _pred(p, pred), np.asarray(truth, dtype=np.int64).reshape(-1))

    @classmethod
    def from_labels(cls, proba: Any, truth: Any, classes: Any, pred: Any = None) -> Reference:
        """Labelled rows whose columns' classes are known (scikit-learn's ``classes_``): ``truth`` and
        ``pred`` as class labels; a true label not among ``classes`` is -1, a predicted one the most probable."""
        import numpy as np

        p = _matrix(proba)
        columns = {_key(c): i for i, c in enumerate(classes)}
        hat = None
        if pred is not None:
            found = np.array([columns.get(_key(v), -1) for v in pred], dtype=np.int64)
            hat = np.where(found < 0, p.argmax(axis=1), found)
        return cls.of(p, [columns.get(_key(v), -1) for v in truth], hat)

    def __add__(self, other: Reference | None) -> Reference:
        import numpy as np

        if other is None or len(other) == 0:
            return self
        if len(self) == 0:
            return other
        if other.proba.shape[1] != self.proba.shape[1]:
            raise ValueError("references with different numbers of classes")
        return Reference(
            np.concatenate([self.proba, other.proba]),
            np.concatenate([self.pred, other.pred]),
            np.concatenate([self.truth, other.truth]),
        )


@dataclass(frozen=True)
class Estimate:
    """The estimated accuracy of one model on rows without labels.

    ``se``: standard error as an estimate of the model's accuracy on the traffic these rows come from (what
    two arms are compared by); ``se_realised``: as a forecast of the accuracy the labels of exactly these rows
    will show. Both include the calibration's own uncertainty. ``reference``: labelled rows the calibration was
    tested (and fitted) on (0: the probabilities are trusted unchecked); ``calibrated``: whether the isotonic
    map was applied.
    ``roc_auc`` and ``f1`` (of the class in column 1) for binary models."""

    accuracy: float
    se: float
    se_realised: float
    rows: int
    reference: int
    calibrated: bool
    classes: int
    roc_auc: float | None = None
    f1: float | None = None

    def interval(self, z: float = 1.96) -> tuple[float, float]:
        return (max(0.0, self.accuracy - z * self.se), min(1.0, self.accuracy + z * self.se))


# -- isotonic calibration ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Calibration:
    """A non-decreasing step map from score to frequency: block ``b`` covers scores from ``left[b]`` on."""

    left: np.ndarray
    sums: np.ndarray
    counts: np.ndarray

    @property
    def means(self) -> np.ndarray:
        return self.sums / self.counts

    def block(self, scores: np.ndarray) -> np.ndarray:
        import numpy as np

        return np.clip(np.searchsorted(self.left, scores, side="right") - 1, 0, len(self.left) - 1)

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return self.means[self.block(scores)]

    def mean_variances(self) -> np.ndarray:
        """Binomial variance of each block's mean, from (s + 1) / (m + 2): a block of all 0s or all 1s is
        not infinitely sure."""
        shrunk = (self.sums + 1.0) / (self.counts + 2.0)
        return shrunk * (1.0 - shrunk) / self.counts


def isotonic(scores: np.ndarray, outcomes: np.ndarray) -> Calibration:
    """The least-squares non-decreasing fit of 0/1 ``outcomes`` on ``scores`` (pool adjacent violators)."""
    import numpy as np

    order = np.argsort(scores, kind="stable")
    xs, ys = scores[order], outcomes[order].astype(float)
    left, first = np.unique(xs, return_index=True)  # equal scores share one value: pooled from the start
    sums = np.add.reduceat(ys, first).tolist()
    counts = np.diff(np.append(first, len(xs))).tolist()
    out_left: list[float] = []
    out_sum: list[float] = []
    out_count: list[int] = []
    for lo, s, c in zip(left.tolist(), sums, counts, strict=True):
        out_left.append(lo)
        out_sum.append(s)
        out_count.append(c)
        # pool while the previous block's mean is not below this one's (equal means pooled: larger blocks)
        while len(out_sum) > 1 and out_sum[-2] * out_count[-1] >= out_sum[-1] * out_count[-2]:
            s, c = out_sum.pop(), out_count.pop()
            out_left.pop()
            out_sum[-1] += s
            out_count[-1] += c
    return Calibration(np.array(out_left), np.array(out_sum), np.array(out_count, dtype=float))


def miscalibrated(scores: np.ndarray, outcomes: np.ndarray, level: float = 0.05) -> bool:
    """Cox's calibration test (Cox, "Two further applications of a model for binary regression", 1958): fit
    P(outcome) = sigmoid(a + b logit(score)) and reject "a = 0, b = 1" (the scores are the probabilities) by
    the likelihood ratio, chi-squared with 2 degrees of freedom. It sees over- and under-confidence, which an
    accuracy estimate is most sensitive to, where a cross-validated score comparison often cannot."""
    import numpy as np

    y = outcomes.astype(float)
    p = np.clip(scores, 1e-9, 1 - 1e-9)
    x = np.column_stack([np.ones(len(p)), np.log(p / (1 - p))])

    def loglik(beta: np.ndarray) -> float:
        eta = x @ beta
        return float(np.sum(y * eta - np.logaddexp(0.0, eta)))

    null = np.array([0.0, 1.0])
    beta = null.copy()
    for _ in range(50):  # Newton's method, halving a step that does not improve the likelihood
        mu = 0.5 * (1.0 + np.tanh(0.5 * (x @ beta)))
        hessian = (x * (mu * (1.0 - mu))[:, None]).T @ x + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, x.T @ (y - mu))
        base = loglik(beta)
        while loglik(beta + step) < base and np.abs(step).max() > 1e-12:
            step = step / 2
        beta = beta + step
        if np.abs(step).max() < 1e-9:
            break
    # chi-squared(2) survival function: exp(-x / 2)
    return math.exp(-max(0.0, loglik(beta) - loglik(null))) < level


# -- the estimate --------------------------------------------------------------------------------------------
def estimate(proba: Any, pred: Any = None, reference: Reference | None = None) -> Estimate:
    """Accuracy (and for two classes F1 and ROC AUC) of rows with probabilities ``proba`` and predicted class
    columns ``pred`` (default: the most probable), calibrated on ``reference`` where it shows them miscalibrated."""
    import numpy as np

    p = _matrix(proba)
    n, k = p.shape
    if n == 0:
        raise ValueError("no rows to estimate")
    hat = _pred(p, pred)
    ref = reference if reference is not None and len(reference) else None
    if ref is not None and ref.proba.shape[1] != k:
        raise ValueError(f"the reference has {ref.proba.shape[1]} classes, the rows {k}")
    binary = k == 2
    # the score calibrated, and the outcome it is calibrated against
    if binary:
        score = p[:, 1]
        ref_score = ref.proba[:, 1] if ref is not None else None
        ref_outcome = ref.truth == 1 if ref is not None else None
    else:
        score = p[np.arange(n), hat]
        ref_score = ref.proba[np.arange(len(ref)), ref.pred] if ref is not None else None
        ref_outcome = ref.pred == ref.truth if ref is not None else None
    cal = None
    calibrated = False
    if ref is not None and len(ref) >= MIN_CALIBRATION:
        assert ref_score is not None and ref_outcome is not None
        cal = isotonic(ref_score, ref_outcome)
        calibrated = miscalibrated(ref_score, ref_outcome)
    q = np.clip(cal(score) if calibrated and cal is not None else score, 0.0, 1.0)
    # probability that each row's prediction is right
    right = np.where(hat == 1, q, 1.0 - q) if binary else q
    accuracy = float(right.mean())
    var_rows = float(right.var(ddof=1)) / n if n > 1 else 0.25
    var_labels = float(np.sum(right * (1.0 - right))) / n**2
    var_cal = 0.0
    if cal is not None:
        # d accuracy / d (block mean): +1/n per row whose rightness is the block mean, -1/n per 1 - mean
        sign = np.where(hat == 1, 1.0, -1.0) if binary else np.ones(n)
        weight = np.bincount(cal.block(score), weights=sign, minlength=len(cal.left)) / n
        var_cal = float(np.sum(weight**2 * cal.mean_variances()))
    roc_auc = f1 = None
    if binary:
        roc_auc, f1 = _expected_auc(score, q), _expected_f1(hat, q)
    return Estimate(
        accuracy=accuracy,
        se=math.sqrt(var_rows + var_cal),
        se_realised=math.sqrt(var_labels + var_cal),
        rows=n,
        reference=len(ref) if ref is not None else 0,
        calibrated=calibrated,
        classes=k,
        roc_auc=roc_auc,
        f1=f1,
    )


def _expected_f1(hat: np.ndarray, q: np.ndarray) -> float | None:
    """F1 of the positive class from the expected confusion matrix (``q``: P(y = 1) per row)."""
    tp = float(q[hat == 1].sum())
    fp = float((1.0 - q[hat == 1]).sum())
    fn = float(q[hat != 1].sum())
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn > 0 else None


def _expected_auc(score: np.ndarray, q: np.ndarray) -> float | None:
    """ROC AUC with each row counted as a positive of weight ``q`` and a negative of weight ``1 - q``, ranked
    by the model's own score (calibration keeps the order but ties blocks); tied scores count half."""
    import numpy as np

    values, group = np.unique(score, return_inverse=True)
    pos = np.bincount(group, weights=q, minlength=len(values))
    neg = np.bincount(group, weights=1.0 - q, minlength=len(values))
    below = np.cumsum(neg) - neg  # negatives with a lower score than each group
    total = pos.sum() * neg.sum()
    return float(np.sum(pos * (below + 0.5 * neg)) / total) if total > 0 else None


def _matrix(proba: Any) -> np.ndarray:
    import numpy as np

    p = np.asarray(proba, dtype=float)
    if p.ndim == 1:  # a positive-class probability
        p = np.column_stack([1.0 - p, p])
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"probabilities must be (rows, classes >= 2); got shape {p.shape}")
    return p


def _pred(p: np.ndarray, pred: Any) -> np.ndarray:
    import numpy as np

    if pred is None:
        return p.argmax(axis=1)
    hat = np.asarray(pred, dtype=np.int64).reshape(-1)
    if len(hat) != len(p) or (len(hat) and (hat.min() < 0 or hat.max() >= p.shape[1])):
        raise ValueError("pred must hold one class column (0 .. classes - 1) per row")
    return hat


# -- from a response log -------------------------------------------------------------------------------------
def probability_column(log: pd.DataFrame) -> str | None:
    """The output column holding class probabilities: ``output.predict_proba`` (logging.probabilities), else
    the one output whose rows are lists of two or more numbers (a model logged to predict probabilities)."""
    name = f"output.{PROBA_OUTPUT}"
    if name in log.columns:
        return name
    outputs = [c for c in log.columns if str(c).startswith("output")]
    if len(outputs) != 1 or log.empty:
        return None
    first = log[outputs[0]].dropna()
    value = first.iloc[0] if len(first) else None
    return outputs[0] if isinstance(value, list) and len(value) >= 2 else None


def label_column(log: pd.DataFrame) -> str | None:
    """The output holding the predicted class, beside the probabilities (None: the model returns only those)."""
    proba = probability_column(log)
    return next((c for c in log.columns if str(c).startswith("output") and c != proba), None)


def class_columns(proba: np.ndarray, labels: Any) -> dict[Any, int]:
    """Which probability column each predicted label is: the column most often largest where it was predicted
    (a scikit-learn classifier predicts its most probable class)."""
    import numpy as np

    top = proba.argmax(axis=1)
    found: dict[Any, int] = {}
    keys = [_key(v) for v in labels]
    for key in set(keys):
        if key is None:
            continue
        rows = np.fromiter((kk == key for kk in keys), dtype=bool, count=len(keys))
        found[key] = int(np.bincount(top[rows], minlength=proba.shape[1]).argmax())
    return found


def log_rows(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """(probabilities, predicted column, true column, labelled) of a response log's answered rows, or None
    when the log holds no class probabilities."""
    import numpy as np

    column = probability_column(rows)
    if column is None:
        return None
    ok = rows[(rows["status"] < 400) & rows[column].map(lambda v: isinstance(v, list))]
    if ok.empty:
        return None
    widths = ok[column].map(len)
    k = int(widths.mode().iloc[0])
    ok = ok[widths == k]
    proba = np.array(ok[column].tolist(), dtype=float).reshape(len(ok), k)
    label = label_column(ok)
    truth_values = ok["ground_truth"].tolist() if "ground_truth" in ok else [None] * len(ok)
    labelled = np.array([_key(v) is not None for v in truth_values], dtype=bool)
    if label is None:  # only probabilities: the labels must be the column numbers
        pred = proba.argmax(axis=1)
        columns: dict[Any, int] = {i: i for i in range(k)}
    else:
        labels = ok[label].tolist()
        columns = class_columns(proba, labels)
        pred = np.array([columns.get(_key(v), -1) for v in labels], dtype=np.int64)
        pred = np.where(pred < 0, proba.argmax(axis=1), pred)
        _fill_last(columns, truth_values, k)
    truth = np.array([columns.get(_key(v), -1) for v in truth_values], dtype=np.int64)
    return proba, pred, truth, labelled


def _fill_last(columns: dict[Any, int], truth_values: list[Any], k: int) -> None:
    """A class never predicted but seen as a label takes the one column left, when exactly one is left."""
    free = set(range(k)) - set(columns.values())
    unseen = {key for v in truth_values if (key := _key(v)) is not None and key not in columns}
    if len(free) == 1 and len(unseen) == 1:
        columns[unseen.pop()] = free.pop()


def _key(value: Any) -> Any:
    """A label as a dictionary key: 1, 1.0 and "1" are one class; missing values are None."""
    if value is None or isinstance(value, (list, dict)):
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if math.isnan(number):
        return None
    return int(number) if number.is_integer() else number


def estimate_from_log(rows: pd.DataFrame, reference: Reference | None = None) -> Estimate | None:
    """The estimate for one model's rows of a response log: its rows without labels analysed, its rows with
    labels (plus ``reference``, e.g. a held-out dataset) calibrated on. None without probabilities in the log
    or without an unlabelled row."""
    arrays = log_rows(rows)
    if arrays is None:
        return None
    proba, pred, truth, labelled = arrays
    if labelled.all():
        return None
    own = Reference(proba[labelled], pred[labelled], truth[labelled])
    combined = own + reference if reference is not None else own
    return estimate(proba[~labelled], pred[~labelled], combined)
