"""The update policy of one deployment: what to watch, the gates, the rollout steps, the guards, who to tell.

```yaml
deployment: eta
watch: {model: eta, alias: challenger}          # or tag: "ready=true"; neither: every new READY version
offline:
  dataset: data/holdout.parquet                 # a DataFrame (Python), a .parquet/.csv path, an MLflow dataset
  target: y
  metrics: {rmse: min, r2: max}                 # any scikit-learn metric name, or a callable (Python)
  min_improvement: 0.0                          # over the champion on the same rows, in the metric's units
  latency_budget_ms: 20                         # p99 of one-row predictions of the candidate
replay: {requests: 1000, max_error_rate: 0.0, min_agreement: 0.9}
rollout:
  shadow: {requests: 500, duration: 10m}        # done at whichever comes first
  canary: [{weight: 5, bake: 5m}, {weight: 25, bake: 5m}, {weight: 50, bake: 5m}, {weight: 100, bake: 5m}]
                                                # {weight: 50, bake: 5m, approve: true}: a person grants it first
  on_manual_change: pause                       # a person changed the deployment mid-rollout: pause, or abort
guards:
  max_error_rate: 0.05                          # hard limits: surely breached -> roll back
  max_p99_ms: 250
  limit_alpha: 0.02                             # false rollbacks by the limits, over the whole rollout
  alpha: 0.02                                   # ... by the comparison with the champion, likewise
  live_metric: {name: mae, direction: min, min_effect: 0.5}
  estimated_accuracy: {margin: 0.02}            # classifiers, no labels needed: CBPE from logged probabilities
  min_sample: 200                               # per step; less is "hold"
  step_deadline: 1h                             # still too little data then -> roll back "no data"
notify: {webhook: "https://hooks.example/x", secret_env: WOLT_WEBHOOK_SECRET, rate_limit: 5, per: 1h}
retrain: {command: "python train.py", drift_threshold: 0.2, metric_decline: 0.1, cooldown: 6h, window: 1h}
```

Parsing is strict: an unknown key or a bad value raises :class:`PolicyError`, one line naming the field
(``policy field 'rollout.canary[1].weight': …``). Durations are seconds (a number) or ``"30s"``, ``"5m"``,
``"1h"`` (the response log's parser).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal, overload

from wolt_jupyter.errors import InvalidArgument, PolicyError
from wolt_jupyter.untrusted import shown_value

Direction = Literal["max", "min"]
DIRECTIONS = ("max", "min")
EVENTS = ("advance", "promote", "rollback", "reject", "hold", "retrain", "pause", "resume", "wait", "approve")
# a pause and a wait for approval are told by default: the rollout stands still until a person acts
DEFAULT_EVENTS = ("promote", "rollback", "reject", "retrain", "pause", "wait")
ON_MANUAL_CHANGE = ("pause", "abort")

# metric names (as written in a policy) -> the scikit-learn function that computes them, and their direction
METRIC_ALIASES: dict[str, tuple[str, Direction]] = {
    "rmse": ("root_mean_squared_error", "min"),
    "mse": ("mean_squared_error", "min"),
    "mae": ("mean_absolute_error", "min"),
    "mape": ("mean_absolute_percentage_error", "min"),
    "r2": ("r2_score", "max"),
    "auc": ("roc_auc_score", "max"),
    "roc_auc": ("roc_auc_score", "max"),
    "accuracy": ("accuracy_score", "max"),
    "f1": ("f1_score", "max"),
    "precision": ("precision_score", "max"),
    "recall": ("recall_score", "max"),
    "log_loss": ("log_loss", "min"),
    "brier": ("brier_score_loss", "min"),
}


def _fail(path: str, problem: str) -> PolicyError:
    return PolicyError(f"policy field {shown_value(path)}: {problem}")


def sklearn_metric(name: str) -> tuple[Callable[..., float], Direction | None]:
    """The scikit-learn function for a metric name (``rmse``, ``roc_auc``, ``f1_score`` …) and its direction
    when the name tells (``*_error``/``*_loss`` are minimised, ``*_score`` maximised); KeyError if unknown."""
    import sklearn.metrics as m

    direction: Direction | None = None
    if name in METRIC_ALIASES:
        name, direction = METRIC_ALIASES[name]
    for candidate in (name, f"{name}_score"):
        fn = getattr(m, candidate, None)
        if (
            callable(fn)
            and not isinstance(fn, type)
            and not candidate.startswith(("get_", "make_", "check_"))
        ):
            if direction is None and candidate.endswith(("_error", "_loss", "_deviance")):
                direction = "min"
            elif direction is None and candidate.endswith("_score"):
                direction = "max"
            return fn, direction
    raise KeyError(name)


def parse_duration(value: Any, path: str) -> float:
    """Seconds from a number or ``"30s"``/``"5m"``/``"1h"``; positive and finite."""
    from wolt_jupyter.units import positive_seconds

    seconds = positive_seconds(value)
    if seconds is None:
        raise _fail(
            path, f'must be a positive duration such as 30, "30s", "5m", "1h"; got {shown_value(value)}'
        )
    return seconds


class _Fields:
    """Reads one mapping of a policy: typed getters that name the field on error, and no unknown keys."""

    def __init__(self, data: Any, path: str, known: tuple[str, ...]) -> None:
        if not isinstance(data, Mapping):
            raise _fail(path, f"must be a mapping with keys {', '.join(known)}; got {shown_value(data)}")
        unknown = sorted(str(k) for k in data if k not in known)
        if unknown:
            where = f"{path}.{unknown[0]}" if path else unknown[0]
            raise _fail(where, f"unknown key; known keys here: {', '.join(known)}")
        self.data, self.path = data, path

    def at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    def raw(self, key: str, default: Any = None) -> Any:
        value = self.data.get(key)
        return default if value is None else value

    # required=True (or a str default) never gives None: the overloads let callers use the value as a str
    @overload
    def string(self, key: str, default: str, *, required: bool = False) -> str: ...
    @overload
    def string(self, key: str, default: None = None, *, required: Literal[True]) -> str: ...
    @overload
    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str | None: ...
    def string(self, key: str, default: str | None = None, *, required: bool = False) -> str | None:
        value = self.data.get(key)
        if value is None:
            if required:
                raise _fail(self.at(key), "is required (a non-empty string)")
            return default
        if not isinstance(value, str) or not value.strip():
            raise _fail(self.at(key), f"must be a non-empty string; got {shown_value(value)}")
        return value.strip()

    def number(
        self,
        key: str,
        default: float | None,
        *,
        low: float = -math.inf,
        high: float = math.inf,
        low_open: bool = False,
        what: str = "a number",
    ) -> float | None:
        value = self.data.get(key)
        if value is None:
            return default
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = ok and (value > low if low_open else value >= low) and value <= high
        if not ok:
            raise _fail(self.at(key), f"must be {what}; got {shown_value(value)}")
        return float(value)

    def fraction(self, key: str, default: float | None, *, open_zero: bool = False) -> float | None:
        what = "a fraction in (0, 1]" if open_zero else "a fraction in [0, 1]"
        return self.number(key, default, low=0.0, high=1.0, low_open=open_zero, what=what)

    def count(self, key: str, default: int | None, *, low: int = 1) -> int | None:
        value = self.data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise _fail(self.at(key), f"must be an integer >= {low}; got {shown_value(value)}")
        return value

    def duration(self, key: str, default: float | None) -> float | None:
        value = self.data.get(key)
        return default if value is None else parse_duration(value, self.at(key))

    def flag(self, key: str, default: bool) -> bool:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise _fail(self.at(key), f"must be true or false; got {shown_value(value)}")
        return value

    def direction(self, key: str, default: Direction | None) -> Direction | None:
        value = self.data.get(key, default)
        if value is None:
            return None
        if value not in DIRECTIONS:
            raise _fail(self.at(key), f"must be 'max' or 'min'; got {shown_value(value)}")
        return value


# -- the policy's parts --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RegistryWebhook:
    """Where the service receives MLflow's registry webhooks (each one triggers an immediate poll): ``host``
    (127.0.0.1 unless told), ``port`` (0: any free one, logged), ``path``, and the webhook's ``secret``."""

    secret: str = field(repr=False)
    port: int = 0
    host: str = "127.0.0.1"
    path: str = "/mlflow-webhook"


@dataclass(frozen=True)
class Watch:
    """Which versions of ``model`` are candidates: every new READY version, or those carrying ``alias`` or
    ``tag`` (``key`` or ``key=value``). ``poll_seconds`` is how often the registry is asked; ``webhook``
    makes MLflow's registry webhooks trigger a poll at once."""

    model: str
    alias: str | None = None
    tag: str | None = None
    poll_seconds: float = 5.0
    webhook: RegistryWebhook | None = None

    def tag_match(self, tags: Mapping[str, str]) -> bool:
        if self.tag is None:
            return True
        key, eq, value = self.tag.partition("=")
        return key in tags and (not eq or str(tags[key]) == value)


@dataclass(frozen=True)
class Metric:
    """One offline metric: ``name`` (a scikit-learn metric, or the label of ``fn``), its direction, and the
    minimum improvement over the champion in the metric's own units (negative: a tolerated regression)."""

    name: str
    direction: Direction
    min_improvement: float = 0.0
    fn: Callable[..., float] | None = field(default=None, compare=False)

    def compute(self, y_true: Any, y_pred: Any) -> float:
        fn = self.fn or sklearn_metric(self.name)[0]
        return float(fn(y_true, y_pred))

    def improvement(self, candidate: float, champion: float) -> float:
        """How much better the candidate is, in the metric's units (positive = better, either direction)."""
        return candidate - champion if self.direction == "max" else champion - candidate

    @property
    def needs_scores(self) -> bool:
        """Ranking metrics want probabilities/scores, not class labels."""
        base = METRIC_ALIASES.get(self.name, (self.name, "max"))[0]
        return self.fn is None and base in (
            "roc_auc_score",
            "average_precision_score",
            "log_loss",
            "brier_score_loss",
        )


@dataclass(frozen=True)
class OfflineGate:
    """Candidate and champion evaluated on the same rows. ``dataset`` is a DataFrame, a ``.parquet``/``.csv``
    path, an MLflow dataset (``mlflow.data``) or a ``runs:/``/``models:/`` artifact URI of such a file."""

    dataset: Any
    target: str
    metrics: tuple[Metric, ...]
    latency_budget_ms: float | None = None
    max_rows: int | None = None


@dataclass(frozen=True)
class ReplayGate:
    """The last ``requests`` logged requests of the deployment replayed through the candidate in-process.

    Fewer than ``min_requests`` logged: skipped with a note, or rejected "no data" when ``required``."""

    requests: int = 1000
    min_requests: int = 1
    required: bool = False
    max_error_rate: float = 0.0
    p99_ms: float | None = None
    min_agreement: float | None = None  # classifiers: share of rows the candidate answers like the champion
    max_mean_abs_difference: float | None = None  # regressors
    metric: str | None = None  # on rows with feedback labels: candidate vs what the champion answered
    min_improvement: float = 0.0


@dataclass(frozen=True)
class ShadowStep:
    """Shadow until ``requests`` mirrored requests or ``duration`` seconds, whichever comes first."""

    requests: int | None = None
    duration: float | None = None


@dataclass(frozen=True)
class CanaryStep:
    """``weight`` percent for ``bake`` seconds; ``approve``: the rollout waits for a person before this step."""

    weight: int
    bake: float
    approve: bool = False


@dataclass(frozen=True)
class Rollout:
    """The live steps, and ``analysis_interval``: how often a live step is judged (independent of
    ``watch.poll_seconds``, which only paces looking for new versions). ``on_manual_change``: what the
    service does when a person changed the deployment during a rollout — ``pause`` until resumed, or
    ``abort`` (the candidate is given up; the deployment stays as the person left it)."""

    shadow: ShadowStep | None = ShadowStep(requests=200, duration=600.0)
    canary: tuple[CanaryStep, ...] = (
        CanaryStep(5, 300.0),
        CanaryStep(25, 300.0),
        CanaryStep(50, 300.0),
        CanaryStep(100, 300.0),
    )
    analysis_interval: float = 1.0
    on_manual_change: Literal["pause", "abort"] = "pause"


@dataclass(frozen=True)
class LiveMetric:
    """A per-request model metric from feedback labels, compared candidate vs champion on the same window.

    ``name`` is the per-request loss: ``mae`` (absolute error), ``mse`` (squared error) or ``accuracy``
    (correct = 1). ``required``: without ``min_labels`` labelled requests the step holds."""

    name: str
    direction: Direction
    min_effect: float
    required: bool = False
    min_labels: int = 50


LIVE_METRICS: dict[str, Direction] = {"mae": "min", "mse": "min", "accuracy": "max"}


@dataclass(frozen=True)
class QueryGuard:
    """A PromQL query judged at every live look, as Flagger's and Argo Rollouts' metric checks are: its first
    sample must stay at most ``max`` and/or at least ``min``; no sample is neither a pass nor a breach.
    ``$deployment``, ``$candidate``, ``$champion`` (variant names) and ``$window`` (the step's age, e.g.
    ``45s``) are replaced in the query. ``prometheus``: its URL (default: the ``prometheus_url`` setting)."""

    name: str
    query: str
    max: float | None = None
    min: float | None = None
    prometheus: str | None = None


@dataclass(frozen=True)
class ServiceGuards:
    """What everyone else gets while a candidate is live, judged from ``limit_min_requests`` requests: the
    champion's p99 and error rate (a candidate that slows or breaks the process hurts them), and the error
    rate of all answers. ``champion_max_p99_ratio`` needs no number known in advance: the champion's p99 in
    the ``baseline`` before the rollout began, times the ratio, is its limit during every step."""

    champion_max_p99_ms: float | None = None
    champion_max_error_rate: float | None = None
    max_error_rate: float | None = None
    champion_max_p99_ratio: float | None = None
    baseline: float = 600.0


@dataclass(frozen=True)
class EstimatedAccuracy:
    """Each arm's accuracy estimated from its logged class probabilities, before labels arrive (CBPE,
    :mod:`wolt_jupyter.monitoring.estimate`; the spec needs ``logging.probabilities``). The candidate is rolled
    back when its accuracy is below the champion's by more than ``margin``, by the guards' always-valid test
    (``min_effect`` is its τ), judged once each arm has ``min_rows`` rows without labels and ``min_reference``
    labelled rows to calibrate on (its own in the window, plus the offline dataset when the policy has one)."""

    margin: float = 0.0
    min_effect: float = 0.02
    min_rows: int = 100
    min_reference: int = 100


@dataclass(frozen=True)
class Guards:
    """When a live step rolls back, holds or may go on. See :func:`wolt_jupyter.updater.decide.decide`.

    ``limit_alpha`` and ``alpha`` bound the chance of a false rollback over the whole rollout (all its steps
    and looks): by a hard limit when the candidate is within it, by the comparison when it is no worse than
    the champion."""

    max_error_rate: float | None = 0.05
    max_p99_ms: float | None = None
    min_agreement: float | None = None  # shadow step: hard floor on agreement with the champion
    alpha: float = 0.02
    limit_alpha: float = 0.02
    live_metric: LiveMetric | None = None
    estimated_accuracy: EstimatedAccuracy | None = None  # off unless set
    min_sample: int = 100
    limit_min_requests: int = 10  # limits and the comparison are judged from this many candidate requests
    step_deadline: float = 3600.0
    service: ServiceGuards = ServiceGuards()
    queries: tuple[QueryGuard, ...] = ()


@dataclass(frozen=True)
class Notify:
    """A JSON webhook (Slack-compatible ``text``), HMAC-signed when a secret is set, at most ``rate_limit``
    messages per ``per`` seconds per candidate."""

    webhook: str
    secret: str | None = field(default=None, repr=False)
    rate_limit: int = 5
    per: float = 3600.0
    events: tuple[str, ...] = DEFAULT_EVENTS
    timeout: float = 5.0
    retries: int = 8  # a failed delivery is tried again this many times ...
    backoff: float = 2.0  # ... after 2 s, 4 s, 8 s, … (doubling, at most 10 min apart)


@dataclass(frozen=True)
class Retrain:
    """Run ``command`` (argv or a shell line) or execute ``notebook`` headless when the champion drifts
    (max PSI of its inputs over the last ``window`` above ``drift_threshold``, judged from ``min_requests``)
    or its live ``metric`` over the last ``window`` declines by ``metric_decline`` (relative) from its
    baseline (the first window with ``min_labels`` labels the champion had); not again within ``cooldown``.
    Looked at every ``check_every`` seconds while no candidate is in flight; a run over ``timeout`` is stopped.
    The run registers a new version, which the watcher then picks up like any other."""

    command: str | tuple[str, ...] | None = None
    notebook: str | None = None
    drift_threshold: float | None = None
    metric_decline: float | None = None
    cooldown: float = 6 * 3600.0
    metric: str | None = None  # mae | mse | accuracy; default: guards.live_metric's, else mae
    window: float = 3600.0
    min_requests: int = 100
    min_labels: int = 50
    check_every: float = 60.0
    timeout: float = 2 * 3600.0


@dataclass(frozen=True)
class Policy:
    deployment: str
    watch: Watch
    offline: OfflineGate | None = None
    replay: ReplayGate | None = None
    rollout: Rollout = Rollout()
    guards: Guards = Guards()
    notify: Notify | None = None
    retrain: Retrain | None = None

    @classmethod
    def load(cls, source: Policy | Mapping[str, Any] | str | os.PathLike[str]) -> Policy:
        """A policy from itself, a dict, YAML text (a string with a line break, or a ``{…}`` flow mapping), or
        a YAML file path."""
        if isinstance(source, Policy):
            return source
        if isinstance(source, Mapping):
            return parse(source)
        if is_yaml_text(source):
            assert isinstance(source, str)
            return parse(_yaml_mapping(source, "policy YAML text"))
        if isinstance(source, (str, os.PathLike)):
            return from_yaml_file(source)
        raise PolicyError(
            f"a policy is a Policy, a dict, YAML text or a YAML file path; got a {type(source).__name__}"
        )

    def steps(self) -> list[Step]:
        """The ordered steps every candidate goes through; after the last one it is promoted."""
        out: list[Step] = []
        if self.offline is not None:
            out.append(Step("offline"))
        if self.replay is not None:
            out.append(Step("replay"))
        if self.rollout.shadow is not None:
            out.append(Step("shadow"))
        out.extend(Step("canary", c.weight, c.bake, c.approve) for c in self.rollout.canary)
        return out

    def to_dict(self, *, secrets: bool = False) -> dict[str, Any]:
        """A plain dict (secrets shown only as set/unset unless ``secrets``, for a private copy; a DataFrame
        dataset and callables by type)."""
        plain = _plain(self, secrets)
        if self.rollout.shadow is None:  # "no shadow step", not "unset": without_unset would drop it
            plain["rollout"]["shadow"] = False
        return plain


@dataclass(frozen=True)
class Step:
    """One step: ``offline``/``replay`` (gates), ``shadow``, or ``canary`` at ``weight`` percent for ``bake``;
    ``approve``: a person grants it before its traffic is applied."""

    kind: Literal["offline", "replay", "shadow", "canary"]
    weight: int = 0
    bake: float = 0.0
    approve: bool = False

    @property
    def live(self) -> bool:
        return self.kind in ("shadow", "canary")

    @property
    def label(self) -> str:
        return f"canary {self.weight}%" if self.kind == "canary" else self.kind


def _plain(value: Any, secrets: bool = False) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        out = {}
        for f in fields(value):
            v = getattr(value, f.name)
            if f.name == "secret":
                out[f.name] = (v if secrets else "****") if v else None
            elif f.name == "fn":
                out[f.name] = None if v is None else getattr(v, "__name__", type(v).__name__)
            else:
                out[f.name] = _plain(v, secrets)
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, secrets) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Path):
        return str(value)
    return f"<{type(value).__name__}>"


def without_unset(value: Any) -> Any:
    """A :meth:`Policy.to_dict` as YAML a person would write: unset fields left out (the parser's defaults)."""
    if isinstance(value, dict):
        return {k: without_unset(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_unset(v) for v in value]
    return value


# -- parsing --------------------------------------------------------------------------------------------------
def from_yaml_file(path: str | os.PathLike[str], base: str | os.PathLike[str] | None = None) -> Policy:
    """A policy from a YAML file; relative dataset and notebook paths are resolved against ``base`` (default:
    the file's folder; the background service runs a private copy, with ``base`` the original's folder)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise PolicyError(
            f"policy file {str(p)!r} does not exist: give a YAML file, YAML text, a dict or a Policy"
        )
    try:
        text = p.read_text()
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {str(p)!r}: {exc.strerror or exc}") from None
    policy = parse(_yaml_mapping(text, f"policy file {str(p)!r}"))
    folder = Path(base).expanduser() if base is not None else p.parent
    offline = policy.offline
    if offline is not None and isinstance(offline.dataset, str) and not _is_uri(offline.dataset):
        dataset = Path(offline.dataset).expanduser()
        if not dataset.is_absolute():  # relative to the policy file, not to wherever the service started
            policy = replace(policy, offline=replace(offline, dataset=str(folder / dataset)))
    retrain = policy.retrain
    if retrain is not None and retrain.notebook is not None and not Path(retrain.notebook).is_absolute():
        policy = replace(policy, retrain=replace(retrain, notebook=str(folder / retrain.notebook)))
    return policy


def _is_uri(text: str) -> bool:
    return "://" in text or text.startswith(("runs:/", "models:/"))


def is_yaml_text(source: object) -> bool:
    """A string that is a policy's YAML itself, not a file's path: it has a line break or is a ``{…}`` mapping."""
    return isinstance(source, str) and ("\n" in source or source.lstrip().startswith("{"))


def _yaml_mapping(text: str, where: str) -> Any:
    """The document in ``text`` (an empty one is ``{}``), read with the bounds every untrusted YAML gets; a
    YAML error or a document past a bound is one line naming ``where``."""
    from wolt_jupyter.untrusted import load_yaml

    data = load_yaml(text, where, PolicyError)
    return {} if data is None else data


def parse(data: Mapping[str, Any]) -> Policy:
    from wolt_jupyter.registry import check_alias, check_model_name
    from wolt_jupyter.spec import check_dns_label

    top = _Fields(
        data,
        "",
        ("deployment", "watch", "offline", "replay", "rollout", "guards", "notify", "retrain"),
    )
    deployment = top.string("deployment", required=True)
    try:
        check_dns_label(deployment, "deployment name")
    except InvalidArgument as exc:
        raise _fail("deployment", str(exc)) from None
    if not top.has("watch"):
        raise _fail("watch", "is required: {model: NAME} (optionally alias: challenger or tag: KEY=VALUE)")
    w = _Fields(top.raw("watch"), "watch", ("model", "alias", "tag", "poll_seconds", "webhook"))
    model = w.string("model", required=True)
    try:
        check_model_name(model)
    except InvalidArgument as exc:
        raise _fail("watch.model", str(exc)) from None
    alias = w.string("alias")
    try:
        if alias is not None:
            check_alias(alias)
    except InvalidArgument as exc:
        raise _fail("watch.alias", str(exc)) from None
    tag = w.string("tag")
    if alias is not None and tag is not None:
        raise _fail("watch.tag", "give alias or tag, not both")
    poll = w.number("poll_seconds", 5.0, low=0.2, what="at least 0.2 (seconds)")
    webhook = _registry_webhook(w.raw("webhook")) if w.has("webhook") else None
    watch = Watch(model, alias, tag, poll or 5.0, webhook)

    return Policy(
        deployment=deployment,
        watch=watch,
        offline=_offline(top.raw("offline")) if top.has("offline") else None,
        replay=_replay(top.raw("replay")) if top.has("replay") else None,
        rollout=_rollout(top.raw("rollout")) if top.has("rollout") else Rollout(),
        guards=_guards(top.raw("guards")) if top.has("guards") else Guards(),
        notify=_notify(top.raw("notify")) if top.has("notify") else None,
        retrain=_retrain(top.raw("retrain")) if top.has("retrain") else None,
    )


def _secret(f: _Fields) -> str | None:
    """``secret`` or ``secret_env`` (the name of an environment variable holding it), not both."""
    secret = f.string("secret")
    env = f.string("secret_env")
    if secret is not None and env is not None:
        raise _fail(f.at("secret_env"), "give secret or secret_env, not both")
    if env is not None:
        secret = os.environ.get(env) or None
        if secret is None:
            raise _fail(f.at("secret_env"), f"environment variable {env} is not set")
    return secret


def _registry_webhook(data: Any) -> RegistryWebhook:
    f = _Fields(data, "watch.webhook", ("port", "host", "path", "secret", "secret_env"))
    secret = _secret(f)
    if secret is None:
        raise _fail(
            "watch.webhook.secret_env", "a secret is required (the one given to MLflow's create_webhook)"
        )
    port = f.count("port", 0, low=0)
    if port is not None and port > 65535:
        raise _fail("watch.webhook.port", f"must be a port 0..65535; got {port}")
    path = f.string("path", "/mlflow-webhook") or "/mlflow-webhook"
    if not path.startswith("/"):
        raise _fail("watch.webhook.path", f"must start with /; got {shown_value(path)}")
    return RegistryWebhook(secret, port or 0, f.string("host", "127.0.0.1") or "127.0.0.1", path)


def _offline(data: Any) -> OfflineGate:
    f = _Fields(
        data, "offline", ("dataset", "target", "metrics", "min_improvement", "latency_budget_ms", "max_rows")
    )
    if not f.has("dataset"):
        raise _fail("offline.dataset", "is required: a DataFrame, a .parquet/.csv path or an MLflow dataset")
    dataset = f.raw("dataset")
    if isinstance(dataset, (str, Path)):
        text = str(dataset)
        if not _is_uri(text) and not text.lower().endswith((".parquet", ".pq", ".csv")):
            raise _fail("offline.dataset", f"a path must end in .parquet or .csv; got {shown_value(text)}")
    elif isinstance(dataset, (Mapping, int, float, bool)):
        raise _fail(
            "offline.dataset", f"must be a DataFrame, a path or an MLflow dataset; got {shown_value(dataset)}"
        )
    target = f.string("target", required=True)
    default_gain = f.number("min_improvement", 0.0) or 0.0
    metrics = _metrics(f.raw("metrics"), "offline.metrics", default_gain)
    return OfflineGate(
        dataset=dataset,
        target=target,
        metrics=metrics,
        latency_budget_ms=f.number(
            "latency_budget_ms", None, low=0.0, low_open=True, what="a positive number"
        ),
        max_rows=f.count("max_rows", None),
    )


def _metrics(data: Any, path: str, default_gain: float) -> tuple[Metric, ...]:
    if data is None:
        raise _fail(path, "is required: e.g. {rmse: min} or [{name: roc_auc, direction: max}]")
    items: list[tuple[str, Any]]
    if isinstance(data, Mapping):
        items = [
            (f"{path}.{k}", {"name": k, **v} if isinstance(v, Mapping) else {"name": k, "direction": v})
            for k, v in data.items()
        ]
    elif isinstance(data, (list, tuple)):
        items = [(f"{path}[{i}]", v if isinstance(v, Mapping) else {"name": v}) for i, v in enumerate(data)]
    else:
        raise _fail(path, f"must be a mapping {{name: max|min}} or a list; got {shown_value(data)}")
    if not items:
        raise _fail(path, "needs at least one metric")
    out = []
    for where, item in items:
        if isinstance(item, Mapping) and callable(item.get("name")):
            item = {**item, "fn": item["name"], "name": getattr(item["name"], "__name__", "metric")}
        f = _Fields(item, where, ("name", "direction", "min_improvement", "fn"))
        fn = f.raw("fn")
        if fn is not None and not callable(fn):
            raise _fail(f.at("fn"), f"must be a callable (y_true, y_pred) -> float; got {shown_value(fn)}")
        name = f.string("name", required=True)
        direction = f.direction("direction", None)
        if fn is None:
            try:
                _, known = sklearn_metric(name)
            except KeyError:
                raise _fail(
                    where,
                    f"unknown metric {shown_value(name)}: use a scikit-learn metric name (e.g. rmse, roc_auc, "
                    "f1_score, mean_absolute_error) or a callable",
                ) from None
            direction = direction or known
        if direction is None:
            raise _fail(f.at("direction"), f"say whether {name} is better high or low: 'max' or 'min'")
        gain = f.number("min_improvement", default_gain)
        out.append(Metric(name, direction, float(gain if gain is not None else default_gain), fn))
    return tuple(out)


def _replay(data: Any) -> ReplayGate:
    if data is True:
        return ReplayGate()
    f = _Fields(
        data,
        "replay",
        (
            "requests",
            "min_requests",
            "required",
            "max_error_rate",
            "p99_ms",
            "min_agreement",
            "max_mean_abs_difference",
            "metric",
            "min_improvement",
        ),
    )
    metric = f.string("metric")
    if metric is not None:
        try:
            sklearn_metric(metric)
        except KeyError:
            raise _fail(
                "replay.metric", f"unknown metric {shown_value(metric)}: use a scikit-learn metric name"
            ) from None
    requests = f.count("requests", 1000)
    min_requests = f.count("min_requests", 1)
    assert requests is not None and min_requests is not None
    if min_requests > requests:
        raise _fail("replay.min_requests", f"cannot exceed replay.requests ({requests})")
    positive: dict[str, Any] = {"low": 0.0, "low_open": True, "what": "a positive number"}
    return ReplayGate(
        requests=requests,
        min_requests=min_requests,
        required=f.flag("required", False),
        max_error_rate=f.fraction("max_error_rate", 0.0) or 0.0,
        p99_ms=f.number("p99_ms", None, **positive),
        min_agreement=f.fraction("min_agreement", None),
        max_mean_abs_difference=f.number("max_mean_abs_difference", None, low=0.0, what="a number >= 0"),
        metric=metric,
        min_improvement=f.number("min_improvement", 0.0) or 0.0,
    )


def _rollout(data: Any) -> Rollout:
    f = _Fields(data, "rollout", ("shadow", "canary", "analysis_interval", "on_manual_change"))
    interval = f.duration("analysis_interval", 1.0)
    if interval is None or not 0.1 <= interval <= 3600:
        raise _fail(
            "rollout.analysis_interval",
            f"must be a duration from 0.1s to 1h; got {shown_value(f.raw('analysis_interval'))}",
        )
    shadow: ShadowStep | None = Rollout().shadow
    if "shadow" in f.data:
        raw = f.data["shadow"]
        if raw is None or raw is False:
            shadow = None
        else:
            s = _Fields(raw, "rollout.shadow", ("requests", "duration"))
            shadow = ShadowStep(s.count("requests", None), s.duration("duration", None))
            if shadow.requests is None and shadow.duration is None:
                raise _fail(
                    "rollout.shadow", "give requests: N and/or duration: T (or shadow: false to skip)"
                )
    canary = Rollout().canary
    if f.has("canary"):
        raw = f.raw("canary")
        if not isinstance(raw, (list, tuple)) or not raw:
            raise _fail(
                "rollout.canary", f"must be a non-empty list of {{weight, bake}}; got {shown_value(raw)}"
            )
        steps: list[CanaryStep] = []
        for i, item in enumerate(raw):
            where = f"rollout.canary[{i}]"
            c = _Fields(item, where, ("weight", "bake", "approve"))
            weight = c.count("weight", None)
            if weight is None or weight > 100:
                raise _fail(
                    f"{where}.weight", f"must be an integer 1..100; got {shown_value(c.raw('weight'))}"
                )
            if steps and weight <= steps[-1].weight:
                raise _fail(f"{where}.weight", f"weights must increase; {weight} follows {steps[-1].weight}")
            bake = c.duration("bake", None)
            if bake is None:
                raise _fail(f"{where}.bake", 'is required: how long to watch this weight, e.g. "5m"')
            steps.append(CanaryStep(weight, bake, c.flag("approve", False)))
        canary = tuple(steps)
    if canary[-1].weight != 100:
        raise _fail("rollout.canary", f"the last weight must be 100 (it is {canary[-1].weight})")
    on_change = f.raw("on_manual_change", "pause")
    if on_change not in ON_MANUAL_CHANGE:
        raise _fail("rollout.on_manual_change", f"must be 'pause' or 'abort'; got {shown_value(on_change)}")
    return Rollout(shadow, canary, interval, on_change)


def _guards(data: Any) -> Guards:
    f = _Fields(
        data,
        "guards",
        (
            "max_error_rate",
            "max_p99_ms",
            "min_agreement",
            "alpha",
            "limit_alpha",
            "error_rate_min_effect",
            "live_metric",
            "estimated_accuracy",
            "min_sample",
            "limit_min_requests",
            "step_deadline",
            "service",
            "queries",
        ),
    )
    d = Guards()
    live = None
    if f.has("live_metric"):
        m = _Fields(
            f.raw("live_metric"),
            "guards.live_metric",
            ("name", "direction", "min_effect", "required", "min_labels"),
        )
        name = m.string("name", required=True)
        if name not in LIVE_METRICS:
            raise _fail(
                "guards.live_metric.name",
                f"must be one of {', '.join(LIVE_METRICS)}; got {shown_value(name)}",
            )
        direction = m.direction("direction", LIVE_METRICS[name])
        effect = m.number("min_effect", None, low=0.0, low_open=True, what="a positive number (metric units)")
        if effect is None:
            raise _fail("guards.live_metric.min_effect", "is required: the smallest change that matters")
        live = LiveMetric(
            name,
            direction or LIVE_METRICS[name],
            effect,
            m.flag("required", False),
            m.count("min_labels", 50) or 50,
        )
    level: dict[str, Any] = {"low": 0.0, "high": 0.5, "low_open": True, "what": "a level in (0, 0.5]"}
    alpha = f.number("alpha", d.alpha, **level)
    limit_alpha = f.number("limit_alpha", d.limit_alpha, **level)
    # read so that old policies load (and a bad value still fails); the exact error-rate test needs no effect
    f.number("error_rate_min_effect", None, low=0.0, high=1.0, low_open=True, what="a fraction in (0, 1]")
    return Guards(
        max_error_rate=f.fraction("max_error_rate", d.max_error_rate),
        max_p99_ms=f.number("max_p99_ms", None, low=0.0, low_open=True, what="a positive number (ms)"),
        min_agreement=f.fraction("min_agreement", None),
        alpha=float(alpha if alpha is not None else d.alpha),
        limit_alpha=float(limit_alpha if limit_alpha is not None else d.limit_alpha),
        live_metric=live,
        estimated_accuracy=_estimated_accuracy(f.raw("estimated_accuracy"))
        if f.has("estimated_accuracy")
        else None,
        min_sample=f.count("min_sample", d.min_sample) or d.min_sample,
        limit_min_requests=f.count("limit_min_requests", d.limit_min_requests) or d.limit_min_requests,
        step_deadline=f.duration("step_deadline", d.step_deadline) or d.step_deadline,
        service=_service_guards(f.raw("service")) if f.has("service") else ServiceGuards(),
        queries=_query_guards(f.raw("queries")) if f.has("queries") else (),
    )


def _service_guards(data: Any) -> ServiceGuards:
    known = ("champion_max_p99_ms", "champion_max_error_rate", "max_error_rate", "champion_max_p99_ratio",
             "baseline")  # fmt: skip
    f = _Fields(data, "guards.service", known)
    p99 = f.number("champion_max_p99_ms", None, low=0.0, low_open=True, what="a positive number (ms)")
    ratio = f.number("champion_max_p99_ratio", None, low=1.0, low_open=True, what="a number above 1 (e.g. 1.5)")
    return ServiceGuards(
        p99,
        f.fraction("champion_max_error_rate", None),
        f.fraction("max_error_rate", None),
        ratio,
        f.duration("baseline", ServiceGuards.baseline) or ServiceGuards.baseline,
    )


def _query_guards(data: Any) -> tuple[QueryGuard, ...]:
    if not isinstance(data, (list, tuple)):
        raise _fail(
            "guards.queries", f"must be a list of {{name, query, max and/or min}}; got {shown_value(data)}"
        )
    out: list[QueryGuard] = []
    for i, item in enumerate(data):
        where = f"guards.queries[{i}]"
        q = _Fields(item, where, ("name", "query", "max", "min", "prometheus"))
        guard = QueryGuard(
            q.string("name", required=True) or "",
            q.string("query", required=True) or "",
            q.number("max", None),
            q.number("min", None),
            q.string("prometheus"),
        )
        if guard.max is None and guard.min is None:
            raise _fail(where, "give max and/or min: the bound the query's value must keep")
        if guard.name in {g.name for g in out}:
            raise _fail(f"{where}.name", f"{shown_value(guard.name)} is used twice")
        out.append(guard)
    return tuple(out)


def _estimated_accuracy(data: Any) -> EstimatedAccuracy | None:
    """``true`` (the defaults), ``false`` (off) or a mapping of :class:`EstimatedAccuracy`'s fields."""
    from wolt_jupyter.monitoring.estimate import MIN_CALIBRATION

    if isinstance(data, bool):
        return EstimatedAccuracy() if data else None
    f = _Fields(data, "guards.estimated_accuracy", ("margin", "min_effect", "min_rows", "min_reference"))
    d = EstimatedAccuracy()
    margin = f.number("margin", d.margin, low=0.0, high=1.0, what="a fraction in [0, 1)")
    if margin is not None and margin >= 1.0:
        raise _fail(
            "guards.estimated_accuracy.margin", f"must be a fraction in [0, 1); got {shown_value(margin)}"
        )
    reference = f.count("min_reference", d.min_reference, low=MIN_CALIBRATION)
    return EstimatedAccuracy(
        margin=float(margin if margin is not None else d.margin),
        min_effect=f.fraction("min_effect", d.min_effect, open_zero=True) or d.min_effect,
        min_rows=f.count("min_rows", d.min_rows) or d.min_rows,
        min_reference=reference or d.min_reference,
    )


def _notify(data: Any) -> Notify:
    known = ("webhook", "secret", "secret_env", "rate_limit", "per", "events", "timeout", "retries",
             "backoff")  # fmt: skip
    f = _Fields(data, "notify", known)
    url = f.string("webhook", required=True)
    assert url is not None
    if not url.startswith(("http://", "https://")):
        raise _fail("notify.webhook", "must be an http:// or https:// URL")
    secret = _secret(f)
    events = f.raw("events", list(DEFAULT_EVENTS))
    if isinstance(events, str):
        events = [events]
    if not isinstance(events, (list, tuple)) or not events or any(e not in EVENTS for e in events):
        raise _fail("notify.events", f"must be a list of {', '.join(EVENTS)}; got {shown_value(events)}")
    return Notify(
        webhook=url,
        secret=secret,
        rate_limit=f.count("rate_limit", 5) or 5,
        per=f.duration("per", 3600.0) or 3600.0,
        events=tuple(events),
        timeout=f.duration("timeout", 5.0) or 5.0,
        retries=f.count("retries", 8, low=0) or 0,
        backoff=f.duration("backoff", 2.0) or 2.0,
    )


def _retrain(data: Any) -> Retrain:
    known = ("command", "notebook", "drift_threshold", "metric_decline", "cooldown", "metric", "window",
             "min_requests", "min_labels", "check_every", "timeout")  # fmt: skip
    f = _Fields(data, "retrain", known)
    command = f.raw("command")
    if command is not None:
        if isinstance(command, (list, tuple)) and command and all(isinstance(c, str) and c for c in command):
            command = tuple(command)
        elif not (isinstance(command, str) and command.strip()):
            raise _fail(
                "retrain.command", f"must be a shell line or a list of arguments; got {shown_value(command)}"
            )
    notebook = f.string("notebook")
    if notebook is not None and not notebook.endswith(".ipynb"):
        raise _fail("retrain.notebook", f"must be an .ipynb path; got {shown_value(notebook)}")
    if (command is None) == (notebook is None):
        raise _fail("retrain", "give exactly one of command or notebook")
    drift = f.number("drift_threshold", None, low=0.0, low_open=True, what="a positive PSI, e.g. 0.2")
    decline = f.fraction("metric_decline", None, open_zero=True)
    if drift is None and decline is None:
        raise _fail("retrain", "give drift_threshold and/or metric_decline: when to retrain")
    metric = f.string("metric")
    if metric is not None and metric not in LIVE_METRICS:
        raise _fail("retrain.metric", f"must be one of {', '.join(LIVE_METRICS)}; got {shown_value(metric)}")
    d = Retrain(command="")
    return Retrain(
        command,
        notebook,
        drift,
        decline,
        f.duration("cooldown", d.cooldown) or d.cooldown,
        metric,
        f.duration("window", d.window) or d.window,
        f.count("min_requests", d.min_requests) or d.min_requests,
        f.count("min_labels", d.min_labels) or d.min_labels,
        f.duration("check_every", d.check_every) or d.check_every,
        f.duration("timeout", d.timeout) or d.timeout,
    )
