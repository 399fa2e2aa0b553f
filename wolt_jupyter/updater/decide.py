"""The decision rule: (policy, state, observations) -> one action with its reason and its numbers.

Pure: no clock, no I/O, no randomness. The loop measures (gates, response log, Prometheus), calls
:func:`decide`, acts, and persists :func:`transition`'s new state, so every decision can be replayed from the
history and is tested with tables.

The rule at a live step (shadow or canary), in order:

1. **Hard limits** — candidate error rate above ``max_error_rate``, p99 above ``max_p99_ms``, shadow agreement
   below ``min_agreement`` — each judged from ``limit_min_requests`` candidate requests on as a count of
   failures (errors; requests slower than ``max_p99_ms``, of which a p99 tolerates 1 %; disagreements): **roll
   back** only when a lower confidence bound of the failure rate, valid however often the loop looks, is above
   what the limit tolerates (:func:`rate_bound`).
2. **Comparison with the champion** on the same window, from ``limit_min_requests`` candidate requests (the
   live metric from ``min_labels`` labels): the error rate by an exact test on which arm the failed requests
   came from (:func:`error_rate_test`); the live metric by a normal-mixture mSPRT (Johari, Pekelis, Walsh,
   "Always valid inference: continuous monitoring of A/B tests", 2015/2022). Both stay valid however often
   the loop looks; when one finds the candidate worse: **roll back**. Opt-in, for classifiers: the mSPRT on
   the accuracy each arm is estimated to have from its class probabilities before labels arrive
   (``estimated_accuracy``, CBPE).
3. **Too little data** — fewer than ``min_sample`` requests on either arm (or labels, when the live metric is
   required): **hold**, never promote; past ``step_deadline``: **roll back, "no data"**. A missing or NaN
   value is never read as a pass nor as a breach.
4. **Done** — shadow: ``requests`` mirrored or ``duration`` elapsed; canary: ``bake`` elapsed: **advance**, or
   **promote** after the last step. Otherwise **hold**.

Levels hold for the whole rollout, not per step: ``limit_alpha`` is split evenly over every hard limit at
every live step, ``alpha`` over every comparison at every step that has a champion (:func:`levels`), so a
candidate within its limits (or no worse than the champion) is rolled back by mistake with probability at most
``limit_alpha`` (``alpha``) over all its steps and looks.

The gates (offline, replay) **reject** a candidate that misses a threshold: it never saw live traffic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeGuard

from wolt_jupyter._display import p_value_text
from wolt_jupyter.updater.policy import Direction, EstimatedAccuracy, Policy, Retrain, Step

if TYPE_CHECKING:
    from wolt_jupyter.monitoring.estimate import Estimate

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

Action = Literal["hold", "advance", "promote", "rollback", "reject"]
Verdict = Literal["pass", "fail", "wait", "n/a"]
Outcome = Literal["promoted", "rolled_back", "rejected"]
FINAL: dict[str, Outcome] = {"promote": "promoted", "rollback": "rolled_back", "reject": "rejected"}


# -- the live metric's sequential test -----------------------------------------------------------------------
@dataclass(frozen=True)
class SequentialResult:
    """One look of the mixture SPRT on a difference ``estimate`` (positive = candidate worse)."""

    estimate: float
    variance: float
    tau: float
    alpha: float
    log_lr: float  # log of the mixture likelihood ratio Λ against "no difference"
    p_value: float  # always-valid p-value at this look: min(1, 1/Λ)
    low: float  # (1 - alpha) confidence sequence for the difference
    high: float

    @property
    def harm(self) -> bool:
        """The candidate is worse, at level alpha, valid under any number of looks."""
        return self.low > 0.0

    @property
    def benefit(self) -> bool:
        return self.high < 0.0


def msprt(
    estimate: float, variance: float, tau: float, alpha: float, theta0: float = 0.0
) -> SequentialResult:
    """The normal-mixture SPRT for a difference whose estimate is approximately N(θ, V).

    Mixing the alternative over θ ~ N(θ0, τ²) gives the closed form
    ``Λ = sqrt(V / (V + τ²)) · exp(τ² (Δ - θ0)² / (2 V (V + τ²)))``, a nonnegative martingale under θ = θ0;
    by Ville's inequality ``P(sup_n Λ_n ≥ 1/α) ≤ α``, so rejecting whenever ``Λ ≥ 1/α`` keeps the type-I
    error at α under continuous monitoring. Inverting it gives the confidence sequence
    ``Δ ± sqrt(2 V (V + τ²) / τ² · (log(1/α) + ½ log((V + τ²) / V)))``. τ is set to the minimum effect that
    matters, where the test is most powerful.
    """
    if not (variance > 0 and tau > 0 and 0 < alpha < 1) or not math.isfinite(estimate):
        raise ValueError("msprt needs a finite estimate, variance > 0, tau > 0 and 0 < alpha < 1")
    v, t2 = variance, tau * tau
    log_lr = 0.5 * math.log(v / (v + t2)) + t2 * (estimate - theta0) ** 2 / (2 * v * (v + t2))
    radius = math.sqrt(2 * v * (v + t2) / t2 * (math.log(1 / alpha) + 0.5 * math.log((v + t2) / v)))
    p = 1.0 if log_lr <= 0 else math.exp(-log_lr)
    return SequentialResult(
        estimate, variance, tau, alpha, log_lr, min(1.0, p), estimate - radius, estimate + radius
    )


# -- always-valid bounds on failure rates --------------------------------------------------------------------
# The mixture's alternatives, as odds ratios over the rate tested: fixed in advance (a grid chosen from the
# data would break the supermartingale), from "a quarter more" to "a thousand times".
ODDS_RATIOS = (1.25, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0, 100.0, 1000.0)


def log_evalue(events: ArrayLike, trials: ArrayLike, null: ArrayLike) -> Any:
    """log E against "a Bernoulli rate is at most ``null``" after ``events`` in ``trials``: a float, or an
    array when given arrays (numpy broadcasting), so a simulation runs the very same test.

    E is the average over :data:`ODDS_RATIOS` r of the likelihood ratio of the rate q with
    odds(q) = r · odds(null) against ``null``, ``r**events / (1 + null·(r - 1))**trials``. Each is a one-sided
    SPRT (Wald, 1945), a nonnegative supermartingale under every rate ≤ null, and so is their average; by
    Ville's inequality P(E ever ≥ 1/α) ≤ α however often it is looked at (a discrete mixture martingale:
    Kaufmann & Koolen, "Mixture martingales revisited", JMLR 2021; Howard, Ramdas, McAuliffe, Sekhon,
    "Time-uniform, nonparametric, nonasymptotic confidence sequences", Ann. Statist. 2021). A null of 0 allows
    no event: one event is certain evidence (E = ∞).
    """
    import numpy as np

    k = np.asarray(events, dtype=float)
    n = np.asarray(trials, dtype=float)
    p0 = np.asarray(null, dtype=float)
    terms = [k * math.log(r) - n * np.log1p(p0 * (r - 1.0)) for r in ODDS_RATIOS]
    top = np.maximum.reduce(terms)
    log_mean = top + np.log(sum(np.exp(t - top) for t in terms) / len(terms))
    log_e = np.where((p0 <= 0) & (k > 0), np.inf, log_mean)
    return float(log_e) if log_e.ndim == 0 else log_e


@dataclass(frozen=True)
class RateBound:
    """One look at a failure rate against the rate a limit tolerates (:func:`rate_bound`)."""

    events: int
    trials: int
    tolerated: float
    alpha: float
    log_e: float  # log E against "rate <= tolerated"
    low: float  # lower end of the (1 - alpha) confidence sequence of the rate

    @property
    def rate(self) -> float:
        return self.events / self.trials if self.trials else math.nan

    @property
    def p_value(self) -> float:
        """Always valid: min(1, 1/E)."""
        return 1.0 if self.log_e <= 0 else math.exp(-self.log_e)

    @property
    def breach(self) -> bool:
        """The rate is above what is tolerated, at level alpha, valid under any number of looks."""
        return self.log_e >= math.log(1 / self.alpha)


def rate_bound(events: int, trials: int, tolerated: float, alpha: float) -> RateBound:
    """Is the rate of ``events`` in ``trials`` surely above ``tolerated``? :func:`log_evalue` against it at
    level ``alpha``, and the lower end of the confidence sequence: for the true rate E is a martingale, so
    {p : E(p) < 1/α} holds it at every look with probability 1 - α, and E decreases in p — the set is
    (low, 1], and ``breach`` is exactly ``low > tolerated``."""
    if not (0 <= events <= trials and 0.0 <= tolerated <= 1.0 and 0.0 < alpha < 1.0):
        raise ValueError("rate_bound needs 0 <= events <= trials, 0 <= tolerated <= 1 and 0 < alpha < 1")
    log_e = log_evalue(events, trials, tolerated)
    return RateBound(events, trials, tolerated, alpha, log_e, _lower_end(events, trials, alpha))


def _lower_end(events: int, trials: int, alpha: float) -> float:
    """Where log E falls to log(1/alpha), between 0 and the observed rate (where E < 1): two rounds of a
    64-point grid in log(rate), then a straight line between the two points around it."""
    import numpy as np

    if events == 0:
        return 0.0
    target = math.log(1 / alpha)
    lo, hi = math.log(1e-12), math.log(events / trials)
    for _ in range(2):
        grid = np.linspace(lo, hi, 65)
        values = log_evalue(events, trials, np.exp(grid))
        above = int((values >= target).sum())  # E decreases along the grid, and is below target at its end
        if above == 0:
            return 0.0
        (lo, hi), (v_lo, v_hi) = grid[above - 1 : above + 1], values[above - 1 : above + 1]
    return math.exp(lo + (hi - lo) * (v_lo - target) / (v_lo - v_hi))


@dataclass(frozen=True)
class ErrorRateTest:
    """Candidate vs champion error rates over one window (:func:`error_rate_test`)."""

    candidate: float  # error rate
    champion: float
    failed: RateBound  # the candidate's share of the failed requests, against its share of all requests

    @property
    def share(self) -> float:
        return self.failed.tolerated

    @property
    def ratio(self) -> float:
        """Candidate error rate over the champion's (inf when only the candidate failed)."""
        if self.champion > 0:
            return self.candidate / self.champion
        return math.inf if self.candidate > 0 else math.nan

    @property
    def ratio_low(self) -> float:
        """Lower end of the confidence sequence of the error-rate ratio (the odds ratio the test bounds)."""
        low, w = self.failed.low, self.share
        return 0.0 if low <= 0 else (low / (1 - low)) / (w / (1 - w)) if low < 1 else math.inf

    @property
    def harm(self) -> bool:
        """The candidate fails more often than the champion, at level alpha, under any number of looks."""
        return self.failed.breach


def error_rate_log_evalue(
    cand_errors: ArrayLike, cand_n: ArrayLike, champ_errors: ArrayLike, champ_n: ArrayLike
) -> Any:
    """log E of :func:`error_rate_test` (arrays welcome, for simulations)."""
    import numpy as np

    nc, n0 = np.asarray(cand_n, dtype=float), np.asarray(champ_n, dtype=float)
    share = np.clip(nc / np.maximum(nc + n0, 1.0), 1e-12, 1 - 1e-12)
    return log_evalue(cand_errors, np.add(cand_errors, champ_errors), share)


def error_rate_test(
    cand_errors: int, cand_n: int, champ_errors: int, champ_n: int, alpha: float
) -> ErrorRateTest:
    """Does the candidate fail more often than the champion? Free of the two unknown rates.

    A request reaches the candidate with probability w and fails at its arm's rate, so a failed request is the
    candidate's with probability w·p_c / (w·p_c + (1 - w)·p_0): at most w exactly when p_c <= p_0, whatever
    the common rate. So the test is :func:`rate_bound` on the arms of the failed requests against w —
    conditioning on the failures, as the exact test of two Poisson rates does (Przyborowski & Wilenski,
    Biometrika 1940) — and the odds ratio it bounds is the rate ratio p_c / p_0. For w it takes the share of
    the window's requests the candidate got (the split the router actually made, sticky keys included); the
    tests measure its type-I error so, under a look a second. In a shadow step both arms see every request and
    w is 1/2; a request failing on both arms counts once on each side, which only makes the test more cautious.
    """
    if not (0 <= cand_errors <= cand_n and 0 <= champ_errors <= champ_n and cand_n > 0 and champ_n > 0):
        raise ValueError("error_rate_test needs requests on both arms and errors within them")
    share = cand_n / (cand_n + champ_n)
    failed = rate_bound(cand_errors, cand_errors + champ_errors, share, alpha)
    return ErrorRateTest(cand_errors / cand_n, champ_errors / champ_n, failed)


@dataclass(frozen=True)
class MeanStats:
    """Count, mean and sample variance of per-request values (from sums, so the loop can keep them cheaply)."""

    n: int
    mean: float
    var: float

    @classmethod
    def of(cls, values: Sequence[float]) -> MeanStats:
        vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
        n = len(vals)
        if n == 0:
            return cls(0, math.nan, math.nan)
        mean = sum(vals) / n
        var = sum((v - mean) ** 2 for v in vals) / (n - 1) if n > 1 else math.nan
        return cls(n, mean, var)


def mean_difference_test(
    cand: MeanStats, champ: MeanStats, direction: Direction, alpha: float, min_effect: float
) -> SequentialResult:
    """Difference of means oriented so that positive = candidate worse (``min``: higher loss is worse)."""
    diff = cand.mean - champ.mean if direction == "min" else champ.mean - cand.mean
    # a floor on the variance: two arms that happen to agree exactly must not give an infinitely sure test
    floor = (min_effect * 1e-3) ** 2
    variance = max(cand.var, floor) / cand.n + max(champ.var, floor) / champ.n
    return msprt(diff, variance, min_effect, alpha)


# -- what the loop measured ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ArmStats:
    """One arm over the step's window: requests, failed requests, p99 latency, labelled metric values, how
    many requests were slower than the policy's ``max_p99_ms`` (None: not counted, and the p99 limit falls
    back to comparing the raw p99, which is no bound), and the accuracy estimated from class probabilities on
    its rows without labels."""

    requests: int = 0
    errors: int = 0
    p99_ms: float | None = None
    metric: MeanStats | None = None
    slow: int | None = None
    estimate: Estimate | None = None
    slow_vs_baseline: int | None = None  # the champion's requests over its limit from before the rollout


@dataclass(frozen=True)
class LiveWindow:
    """Candidate and champion over the same window (since the step started). In a shadow step the champion
    arm is the live answers to the requests the shadow mirrored; ``agreement`` is (agreeing, paired)."""

    candidate: ArmStats
    champion: ArmStats
    agreement: tuple[int, int] | None = None
    exits: tuple[str, ...] = ()  # runtime processes/containers that ended during the step (crashes, kills)
    queries: tuple[tuple[str, float | None], ...] = ()  # each query guard's value (None: no sample)
    # the champion's p99 (ms) and its request count in the baseline before the rollout, when one is judged
    champion_baseline: tuple[float, int] | None = None


@dataclass(frozen=True)
class OfflineResult:
    """The offline gate's measurements: metric values on the same rows, the candidate's one-row latency p99."""

    rows: int
    candidate: dict[str, float]
    champion: dict[str, float] | None = None
    latency_p99_ms: float | None = None
    error: str | None = None  # the candidate could not predict at all


@dataclass(frozen=True)
class ReplayResult:
    """The replay gate's measurements over the last logged requests, the candidate against the champion's
    logged answers."""

    requests: int
    errors: int = 0
    latency_p99_ms: float | None = None
    agreement: float | None = None
    mean_abs_difference: float | None = None
    labelled: int = 0
    candidate_metric: float | None = None
    champion_metric: float | None = None
    first_error: str | None = None


@dataclass(frozen=True)
class Observations:
    now: float
    offline: OfflineResult | None = None
    replay: ReplayResult | None = None
    live: LiveWindow | None = None


@dataclass(frozen=True)
class RolloutState:
    """Where one candidate is: the index of its step in ``policy.steps()`` and when that step started."""

    candidate: str
    champion: str | None
    step: int
    step_started: float
    outcome: Outcome | None = None
    started: float | None = None  # when the rollout began (the champion's baseline ends there)


# -- what comes out -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Check:
    """One judged quantity: the candidate's value, the champion's, the threshold, the test and the verdict."""

    name: str
    verdict: Verdict
    why: str
    value: float | None = None
    baseline: float | None = None
    threshold: float | None = None
    statistic: float | None = None  # log Λ of the sequential test
    p_value: float | None = None
    n: int | None = None
    n_baseline: int | None = None
    interval: tuple[float, float] | None = None


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str
    step: int
    step_label: str
    checks: tuple[Check, ...] = field(default_factory=tuple)

    @property
    def final(self) -> bool:
        return self.action in FINAL


def _finite(x: float | None) -> TypeGuard[float]:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


def _decision(action: Action, reason: str, state: RolloutState, step: Step, checks: list[Check]) -> Decision:
    return Decision(action, reason, state.step, step.label, tuple(checks))


def decide(policy: Policy, state: RolloutState, obs: Observations) -> Decision:
    """The one action for this look. See the module docstring for the rule."""
    steps = policy.steps()
    if state.outcome is not None or state.step >= len(steps):
        step = steps[min(state.step, len(steps) - 1)]
        return _decision("hold", f"finished: {state.outcome or 'all steps done'}", state, step, [])
    step = steps[state.step]
    if step.kind == "offline":
        return _offline(policy, state, step, obs)
    if step.kind == "replay":
        return _replay(policy, state, step, obs)
    return _with_estimates(_live(policy, state, step, steps, obs), obs.live)


def _pass_or_next(state: RolloutState, steps_left: int) -> Action:
    return "advance" if steps_left > 0 else "promote"


def _offline(policy: Policy, state: RolloutState, step: Step, obs: Observations) -> Decision:
    gate = policy.offline
    assert gate is not None
    res = obs.offline
    if res is None:
        return _decision("hold", "offline evaluation not measured yet", state, step, [])
    if res.error:
        check = Check("offline evaluation", "fail", f"the candidate cannot predict: {res.error}", n=res.rows)
        return _decision(
            "reject", f"offline: the candidate cannot predict ({res.error})", state, step, [check]
        )
    checks: list[Check] = []
    for metric in gate.metrics:
        value = res.candidate.get(metric.name)
        base = (res.champion or {}).get(metric.name)
        if not _finite(value):
            checks.append(Check(metric.name, "fail", "no value for the candidate", n=res.rows))
            continue
        if res.champion is None:
            checks.append(Check(metric.name, "pass", "no champion to compare with", value=value, n=res.rows))
            continue
        if not _finite(base):
            checks.append(
                Check(
                    metric.name, "pass", "the champion has no value to compare with", value=value, n=res.rows
                )
            )
            continue
        gain = metric.improvement(value, base)
        ok = gain >= metric.min_improvement
        word = "higher" if metric.direction == "max" else "lower"
        why = (
            f"{metric.name} {value:.4g} vs champion {base:.4g}: improvement {gain:+.4g} "
            f"({word} is better), needed {metric.min_improvement:+.4g}"
        )
        checks.append(
            Check(metric.name, "pass" if ok else "fail", why, value=value, baseline=base,
                  threshold=metric.min_improvement, statistic=gain, n=res.rows, n_baseline=res.rows)
        )  # fmt: skip
    if gate.latency_budget_ms is not None:
        lat = res.latency_p99_ms
        if not _finite(lat):
            checks.append(
                Check(
                    "latency p99 (ms)", "fail", "latency was not measured", threshold=gate.latency_budget_ms
                )
            )
        else:
            ok = lat <= gate.latency_budget_ms
            why = f"one-row p99 {lat:.3g} ms, budget {gate.latency_budget_ms:.3g} ms"
            checks.append(
                Check(
                    "latency p99 (ms)",
                    "pass" if ok else "fail",
                    why,
                    value=lat,
                    threshold=gate.latency_budget_ms,
                )
            )
    return _gate_verdict("offline", state, step, checks, policy)


def _gate_verdict(
    gate: str, state: RolloutState, step: Step, checks: list[Check], policy: Policy
) -> Decision:
    failed = [c for c in checks if c.verdict == "fail"]
    if failed:
        return _decision("reject", f"{gate}: " + "; ".join(c.why for c in failed), state, step, checks)
    action = _pass_or_next(state, len(policy.steps()) - state.step - 1)
    passed = "; ".join(c.why for c in checks) or "nothing to check"
    return _decision(action, f"{gate} passed: {passed}", state, step, checks)


def _replay(policy: Policy, state: RolloutState, step: Step, obs: Observations) -> Decision:
    gate = policy.replay
    assert gate is not None
    res = obs.replay
    if res is None:
        return _decision("hold", "replay not measured yet", state, step, [])
    if res.requests < gate.min_requests:
        check = Check("replayed requests", "fail" if gate.required else "n/a",
                      f"only {res.requests} logged requests, {gate.min_requests} needed",
                      value=res.requests, threshold=gate.min_requests, n=res.requests)  # fmt: skip
        if gate.required:
            return _decision("reject", f"replay: no data ({check.why})", state, step, [check])
        action = _pass_or_next(state, len(policy.steps()) - state.step - 1)
        return _decision(action, f"replay skipped: {check.why}", state, step, [check])
    checks: list[Check] = []
    rate = res.errors / res.requests
    why = f"{res.errors} of {res.requests} replayed requests failed ({rate:.2%}), at most {gate.max_error_rate:.2%}"
    if res.first_error:
        why += f"; first: {res.first_error}"
    checks.append(Check("replay error rate", "pass" if rate <= gate.max_error_rate else "fail", why,
                        value=rate, threshold=gate.max_error_rate, n=res.requests))  # fmt: skip
    if gate.p99_ms is not None:
        checks.append(_upper_limit("replay latency p99 (ms)", res.latency_p99_ms, gate.p99_ms, res.requests))
    if gate.min_agreement is not None:
        checks.append(_lower_limit("replay agreement", res.agreement, gate.min_agreement, res.requests))
    if gate.max_mean_abs_difference is not None:
        checks.append(
            _upper_limit(
                "replay mean |candidate - champion|",
                res.mean_abs_difference,
                gate.max_mean_abs_difference,
                res.requests,
            )
        )
    if gate.metric is not None:
        from wolt_jupyter.updater.policy import Metric, sklearn_metric

        name = gate.metric
        if res.labelled == 0 or not _finite(res.candidate_metric) or not _finite(res.champion_metric):
            checks.append(Check(f"replay {name}", "n/a", "no feedback labels on the replayed requests", n=0))
        else:
            direction = sklearn_metric(name)[1] or "max"
            metric = Metric(name, direction, gate.min_improvement)
            cand, base = float(res.candidate_metric), float(res.champion_metric)
            gain = metric.improvement(cand, base)
            ok = gain >= gate.min_improvement
            why = f"{name} on {res.labelled} labelled requests {cand:.4g} vs champion's answers {base:.4g} (improvement {gain:+.4g}, needed {gate.min_improvement:+.4g})"
            checks.append(Check(f"replay {name}", "pass" if ok else "fail", why, value=cand, baseline=base,
                                threshold=gate.min_improvement, statistic=gain, n=res.labelled, n_baseline=res.labelled))  # fmt: skip
    return _gate_verdict("replay", state, step, checks, policy)


def _upper_limit(name: str, value: float | None, limit: float, n: int | None) -> Check:
    if not _finite(value):
        return Check(
            name, "wait", "no value (not measured or NaN): neither a pass nor a breach", threshold=limit, n=n
        )
    ok = value <= limit
    return Check(
        name,
        "pass" if ok else "fail",
        f"{name} {value:.4g}, limit {limit:.4g}",
        value=value,
        threshold=limit,
        n=n,
    )


def _lower_limit(name: str, value: float | None, limit: float, n: int | None) -> Check:
    if not _finite(value):
        return Check(
            name, "wait", "no value (not measured or NaN): neither a pass nor a breach", threshold=limit, n=n
        )
    ok = value >= limit
    return Check(
        name,
        "pass" if ok else "fail",
        f"{name} {value:.4g}, at least {limit:.4g}",
        value=value,
        threshold=limit,
        n=n,
    )


P99_TOLERANCE = 0.01  # a p99 within the limit lets 1 % of requests be slower than it


@dataclass(frozen=True)
class Levels:
    """The level of one hard limit and of one comparison at one step (:func:`levels`)."""

    limit: float
    comparison: float


def compared(step: Step) -> bool:
    """Whether the step has a champion to compare with: at 100 % the champion serves nobody."""
    return step.live and not (step.kind == "canary" and step.weight >= 100)


def levels(policy: Policy) -> Levels:
    """``limit_alpha`` split evenly over every hard limit (the service's error-rate and p99 guards included) at
    every live step, ``alpha`` over every comparison at every step with a champion (Bonferroni), so each
    bounds its false rollbacks over the whole rollout."""
    g = policy.guards
    live = [s for s in policy.steps() if s.live]
    service = g.service
    limits = sum(
        (g.max_error_rate is not None)
        + (g.max_p99_ms is not None)
        + (g.min_agreement is not None and s.kind == "shadow")
        + (service.champion_max_p99_ms is not None)
        + (service.champion_max_error_rate is not None)
        + (service.max_error_rate is not None)
        for s in live
    )
    tests = 1 + (g.live_metric is not None) + (g.estimated_accuracy is not None)
    comparisons = sum(compared(s) for s in live) * tests
    return Levels(limit=g.limit_alpha / max(1, limits), comparison=g.alpha / max(1, comparisons))


def _confidence(alpha: float) -> str:
    return f"{100 * (1 - alpha):.4g}%"


def _bound_check(
    name: str, b: RateBound, why: str, value: float | None, threshold: float, interval: tuple[float, float]
) -> Check:
    return Check(name, "fail" if b.breach else "pass", why, value=value, threshold=threshold,
                 statistic=b.log_e, p_value=b.p_value, n=b.trials, interval=interval)  # fmt: skip


def _error_limit(
    errors: int, requests: int, limit: float, alpha: float, name: str = "error rate limit", label: str = ""
) -> Check:
    b = rate_bound(errors, requests, limit, alpha)
    why = (
        f"{label or 'candidate error rate'} {b.rate:.2%} ({errors}/{requests}), "
        f"{_confidence(alpha)} lower bound {b.low:.2%}, limit {limit:.2%}"
    )
    return _bound_check(name, b, why, b.rate, limit, (b.low, math.inf))


def _p99_limit(
    arm: ArmStats, limit_ms: float, alpha: float, name: str = "p99 latency (ms)", whose: str = "candidate"
) -> Check:
    if arm.slow is None:
        raw = _upper_limit(name, arm.p99_ms, limit_ms, arm.requests)
        return replace(raw, why=f"{raw.why} (raw p99: slower requests not counted, no bound)")
    b = rate_bound(arm.slow, arm.requests, P99_TOLERANCE, alpha)
    why = (
        f"{name}: {arm.slow} of {arm.requests} {whose} requests over {limit_ms:.4g} ms "
        f"({b.rate:.2%}, {_confidence(alpha)} lower bound {b.low:.2%}; a p99 within the limit allows 1%)"
    )
    return _bound_check(name, b, why, arm.p99_ms, limit_ms, (b.low, math.inf))


RELATIVE_P99 = "champion p99 vs before the rollout (ms)"


def _relative_p99(
    champ: ArmStats, baseline: tuple[float, int] | None, ratio: float, alpha: float, min_requests: int,
    window: float,
) -> Check:  # fmt: skip
    """The champion's p99 limit from its own past: ``ratio`` times its p99 in the baseline window, judged like
    any p99 limit (its requests over that, against the 1 % a p99 allows)."""
    if baseline is None:
        why = (
            f"{RELATIVE_P99}: no baseline, fewer than {min_requests} champion requests in the "
            f"{window:.0f}s before the rollout; not judged"
        )
        return Check(RELATIVE_P99, "n/a", why)
    base_ms, n0 = baseline
    limit = base_ms * ratio
    check = _p99_limit(replace(champ, slow=champ.slow_vs_baseline), limit, alpha, RELATIVE_P99, "champion")
    why = f"{check.why}; the limit is {ratio:.3g}x its p99 of {base_ms:.4g} ms over {n0} requests before"
    return replace(check, why=why, baseline=base_ms, n_baseline=n0)


def _agreement_limit(agree: int, paired: int, floor: float, alpha: float) -> Check:
    b = rate_bound(paired - agree, paired, 1.0 - floor, alpha)
    high = 1.0 - b.low
    why = (
        f"shadow agreement {agree / paired:.4g} ({agree}/{paired}), {_confidence(alpha)} upper bound "
        f"{high:.4g}, at least {floor:.4g}"
    )
    return _bound_check("shadow agreement", b, why, agree / paired, floor, (0.0, high))


def _error_comparison(cand: ArmStats, champ: ArmStats, alpha: float) -> Check:
    t = error_rate_test(cand.errors, cand.requests, champ.errors, champ.requests, alpha)
    b = t.failed
    ratio = "n/a" if math.isnan(t.ratio) else f"{t.ratio:.3g}x"
    why = (
        f"error rate {t.candidate:.2%} ({cand.errors}/{cand.requests}) vs champion {t.champion:.2%} "
        f"({champ.errors}/{champ.requests}): {b.events} of {b.trials} failed requests were the candidate's at a "
        f"{t.share:.1%} share of requests; error-rate ratio {ratio}, {_confidence(alpha)} confidence sequence "
        f"above {t.ratio_low:.3g}x (always-valid {p_value_text(b.p_value, 'p')})"
    )
    why += ": candidate worse" if t.harm else ", no harm"
    return Check("error rate vs champion", "fail" if t.harm else "pass", why, value=t.candidate,
                 baseline=t.champion, threshold=1.0, statistic=b.log_e, p_value=b.p_value, n=cand.requests,
                 n_baseline=champ.requests, interval=(t.ratio_low, math.inf))  # fmt: skip


def _live(policy: Policy, state: RolloutState, step: Step, steps: list[Step], obs: Observations) -> Decision:
    g = policy.guards
    elapsed = max(0.0, obs.now - state.step_started)
    past_deadline = elapsed >= g.step_deadline
    live = obs.live
    if live is None:
        if past_deadline:
            why = f"no data: nothing observed in {elapsed:.0f}s (deadline {g.step_deadline:.0f}s)"
            return _decision("rollback", why, state, step, [])
        return _decision("hold", f"waiting for observations ({elapsed:.0f}s into the step)", state, step, [])
    cand, champ = live.candidate, live.champion
    level = levels(policy)
    judged = cand.requests >= g.limit_min_requests
    checks: list[Check] = []

    # 0. the runtime ended while the candidate was live: the requests it took down never reached the log
    if live.exits:
        n = len(live.exits)
        why = (
            f"the runtime ended {n} time{'s' if n > 1 else ''} while the candidate was live ({live.exits[0]})"
        )
        check = Check("runtime exits", "fail", why, value=n, threshold=0, n=cand.requests)
        return _decision("rollback", f"crash during the step: {why}", state, step, [check])

    # 0b. what everyone else gets: the champion's arm, all answers, the policy's own queries
    service = _service_checks(policy, live, level.limit)
    hurt = [c for c in service if c.verdict == "fail"]
    if hurt:
        why = "; ".join(c.why for c in hurt)
        return _decision("rollback", f"the service is hurt: {why}", state, step, service)
    checks.extend(service)

    # 1. hard limits
    if judged:
        if g.max_error_rate is not None:
            checks.append(_error_limit(cand.errors, cand.requests, g.max_error_rate, level.limit))
        if g.max_p99_ms is not None:
            checks.append(_p99_limit(cand, g.max_p99_ms, level.limit))
        if g.min_agreement is not None and step.kind == "shadow" and live.agreement is not None:
            agree, paired = live.agreement
            if paired >= g.limit_min_requests:
                checks.append(_agreement_limit(agree, paired, g.min_agreement, level.limit))
    else:
        checks.append(Check("hard limits", "wait",
                            f"{cand.requests} candidate requests, limits and the comparison judged from "
                            f"{g.limit_min_requests}", n=cand.requests, threshold=g.limit_min_requests))  # fmt: skip
    breached = [c for c in checks if c.verdict == "fail"]
    if breached:
        return _decision(
            "rollback", "hard limit breached: " + "; ".join(c.why for c in breached), state, step, checks
        )

    # 2. the comparison with the champion on the same window
    lm = g.live_metric
    labels_c = cand.metric.n if cand.metric else 0
    labels_0 = champ.metric.n if champ.metric else 0
    if not compared(step):
        checks.append(Check("comparison with champion", "n/a", "at 100% the champion serves no traffic"))
    else:
        if judged and champ.requests > 0:
            checks.append(_error_comparison(cand, champ, level.comparison))
        if lm is not None:
            if labels_c >= max(2, lm.min_labels) and labels_0 >= max(2, lm.min_labels):
                assert cand.metric is not None and champ.metric is not None
                t = mean_difference_test(cand.metric, champ.metric, lm.direction, level.comparison,
                                         lm.min_effect)  # fmt: skip
                checks.append(_test_check(f"{lm.name} vs champion", t, cand.metric.mean, champ.metric.mean,
                                          labels_c, labels_0))  # fmt: skip
            else:
                checks.append(Check(f"{lm.name} vs champion", "n/a",
                                    f"{labels_c} and {labels_0} labelled requests, the test starts at {lm.min_labels}",
                                    n=labels_c, n_baseline=labels_0))  # fmt: skip
        if g.estimated_accuracy is not None:
            checks.append(
                _estimated_accuracy_test(
                    g.estimated_accuracy, cand.estimate, champ.estimate, level.comparison
                )
            )
    harmed = [c for c in checks if c.verdict == "fail"]
    if harmed:
        return _decision(
            "rollback", "worse than the champion: " + "; ".join(c.why for c in harmed), state, step, checks
        )

    # 3. enough data to go on?
    short: list[str] = []
    if cand.requests < g.min_sample:
        short.append(f"candidate {cand.requests}/{g.min_sample} requests")
    if compared(step) and champ.requests < g.min_sample:
        short.append(f"champion {champ.requests}/{g.min_sample} requests")
    if (
        lm is not None
        and lm.required
        and (labels_c < lm.min_labels or (compared(step) and labels_0 < lm.min_labels))
    ):
        short.append(f"labels {labels_c}/{lm.min_labels} (champion {labels_0})")
    if short:
        sample = Check("minimum sample", "wait", ", ".join(short), value=cand.requests, threshold=g.min_sample,
                       n=cand.requests, n_baseline=champ.requests)  # fmt: skip
        checks.append(sample)
        if past_deadline:
            why = f"no data: {sample.why} after {elapsed:.0f}s (deadline {g.step_deadline:.0f}s)"
            return _decision("rollback", why, state, step, checks)
        return _decision(
            "hold", f"too little data: {sample.why} ({elapsed:.0f}s into the step)", state, step, checks
        )

    # 4. step done?
    if step.kind == "shadow":
        shadow = policy.rollout.shadow
        assert shadow is not None
        done_n = shadow.requests is not None and cand.requests >= shadow.requests
        done_t = shadow.duration is not None and elapsed >= shadow.duration
        done = done_n or done_t
        want = " or ".join(
            x for x in (
                f"{shadow.requests} requests" if shadow.requests is not None else "",
                f"{shadow.duration:.0f}s" if shadow.duration is not None else "",
            ) if x
        )  # fmt: skip
        progress = f"shadow {cand.requests} requests in {elapsed:.0f}s (done at {want})"
    else:
        done = elapsed >= step.bake
        progress = f"{step.label} baked {elapsed:.0f}s of {step.bake:.0f}s"
    if not done:
        return _decision("hold", f"{progress}; no breach, no harm detected", state, step, checks)
    action = _pass_or_next(state, len(steps) - state.step - 1)
    verb = "promote" if action == "promote" else "advance"
    return _decision(action, f"{progress}: no breach, no harm detected; {verb}", state, step, checks)


def _service_checks(policy: Policy, live: LiveWindow, alpha: float) -> list[Check]:
    """The whole-service guards (``guards.service``), judged like the hard limits, and the query guards
    (``guards.queries``: a value, no count behind it, compared as it is)."""
    g = policy.guards
    cand, champ = live.candidate, live.champion
    checks: list[Check] = []
    enough = champ.requests >= g.limit_min_requests
    if g.service.champion_max_p99_ms is not None and enough:
        checks.append(_p99_limit(champ, g.service.champion_max_p99_ms, alpha, "champion p99 latency (ms)",
                                 "champion"))  # fmt: skip
    if g.service.champion_max_p99_ratio is not None and enough:
        checks.append(_relative_p99(champ, live.champion_baseline, g.service.champion_max_p99_ratio, alpha,
                                    g.limit_min_requests, g.service.baseline))  # fmt: skip
    if g.service.champion_max_error_rate is not None and enough:
        checks.append(_error_limit(champ.errors, champ.requests, g.service.champion_max_error_rate, alpha,
                                   "champion error rate", "champion error rate"))  # fmt: skip
    total = cand.requests + champ.requests
    if g.service.max_error_rate is not None and total >= g.limit_min_requests:
        checks.append(_error_limit(cand.errors + champ.errors, total, g.service.max_error_rate, alpha,
                                   "error rate of all answers", "error rate of all answers"))  # fmt: skip
    values = dict(live.queries)
    for q in g.queries:
        value = values.get(q.name)
        if q.max is not None:
            checks.append(_upper_limit(f"query {q.name}", value, q.max, None))
        if q.min is not None:
            checks.append(_lower_limit(f"query {q.name}", value, q.min, None))
    return checks


def _test_check(name: str, t: SequentialResult, value: float, base: float, n: int, n0: int) -> Check:
    ci = f"[{t.low:+.4g}, {t.high:+.4g}]"
    if t.harm:
        verdict: Verdict = "fail"
        why = f"{name}: candidate worse by {t.estimate:+.4g}, {_confidence(t.alpha)} confidence sequence {ci} above 0 (always-valid {p_value_text(t.p_value, 'p')})"
    else:
        verdict = "pass"
        why = f"{name}: difference {t.estimate:+.4g}, {_confidence(t.alpha)} confidence sequence {ci} (always-valid {p_value_text(t.p_value, 'p')}), no harm"
    return Check(name, verdict, why, value=value, baseline=base, threshold=0.0, statistic=t.log_lr,
                 p_value=t.p_value, n=n, n_baseline=n0, interval=(t.low, t.high))  # fmt: skip


# -- accuracy estimated from class probabilities (CBPE) ------------------------------------------------------
ESTIMATE_CHECK = "estimated accuracy (CBPE)"
ESTIMATE_TEST = "estimated accuracy vs champion (CBPE)"


def _estimate_text(who: str, e: Estimate | None) -> str:
    if e is None:
        return f"{who}: no estimate (no class probabilities logged, or every row labelled)"
    low, high = e.interval()
    if e.calibrated:
        basis = f"calibrated on {e.reference} labelled rows"
    elif e.reference:
        basis = f"its own probabilities, calibrated enough on {e.reference} labelled rows"
    else:
        basis = "its own probabilities, unchecked: no labelled rows"
    text = f"{who} {e.accuracy:.3f} [{low:.3f}, {high:.3f}] on {e.rows} unlabelled rows ({basis})"
    if e.roc_auc is not None and e.f1 is not None:
        text += f", ROC AUC {e.roc_auc:.3f}, F1 {e.f1:.3f}"
    return text


def _with_estimates(decision: Decision, live: LiveWindow | None) -> Decision:
    """Every live decision shows both arms' estimated accuracy when either has one: information, never a
    verdict by itself (the guard ``estimated_accuracy`` judges it in the sequential tests)."""
    if live is None or (live.candidate.estimate is None and live.champion.estimate is None):
        return decision
    cand, champ = live.candidate.estimate, live.champion.estimate
    why = f"{_estimate_text('candidate', cand)}; {_estimate_text('champion', champ)}; assumes calibrated probabilities and no concept drift"
    check = Check(ESTIMATE_CHECK, "n/a", why, value=cand.accuracy if cand else None,
                  baseline=champ.accuracy if champ else None, n=cand.rows if cand else None,
                  n_baseline=champ.rows if champ else None, interval=cand.interval() if cand else None)  # fmt: skip
    return replace(decision, checks=(*decision.checks, check))


def _estimated_accuracy_test(
    guard: EstimatedAccuracy, cand: Estimate | None, champ: Estimate | None, alpha: float
) -> Check:
    """Champion minus candidate estimated accuracy (positive: the candidate worse) by :func:`msprt`; harm
    when the confidence sequence lies above ``margin``. Not judged without enough rows or reference."""
    short = []
    for who, e in (("candidate", cand), ("champion", champ)):
        if e is None:
            short.append(f"{who} has no estimate")
        elif e.rows < guard.min_rows:
            short.append(f"{who} {e.rows}/{guard.min_rows} unlabelled rows")
        elif e.reference < guard.min_reference:
            short.append(f"{who} {e.reference}/{guard.min_reference} labelled rows to calibrate on")
    if short:
        return Check(ESTIMATE_TEST, "n/a", "not judged: " + ", ".join(short), threshold=guard.margin,
                     n=cand.rows if cand else None, n_baseline=champ.rows if champ else None)  # fmt: skip
    assert cand is not None and champ is not None
    floor = (guard.min_effect * 1e-3) ** 2  # two exact estimates must not make an infinitely sure test
    t = msprt(champ.accuracy - cand.accuracy, max(cand.se**2 + champ.se**2, floor), guard.min_effect, alpha)
    ci = f"[{t.low:+.4f}, {t.high:+.4f}]"
    if t.low > guard.margin:
        verdict: Verdict = "fail"
        why = f"{ESTIMATE_TEST}: candidate {cand.accuracy:.3f} vs champion {champ.accuracy:.3f}, worse by {t.estimate:+.4f}; {1 - t.alpha:.0%} confidence sequence {ci} above the margin {guard.margin:.4g}"
    else:
        verdict = "pass"
        why = f"{ESTIMATE_TEST}: candidate {cand.accuracy:.3f} vs champion {champ.accuracy:.3f}, difference {t.estimate:+.4f}, {1 - t.alpha:.0%} confidence sequence {ci} not above the margin {guard.margin:.4g}"
    return Check(ESTIMATE_TEST, verdict, why, value=cand.accuracy, baseline=champ.accuracy, threshold=guard.margin,
                 statistic=t.log_lr, p_value=t.p_value, n=cand.rows, n_baseline=champ.rows,
                 interval=(t.low, t.high))  # fmt: skip


def transition(policy: Policy, state: RolloutState, decision: Decision, now: float) -> RolloutState:
    """The state after the loop carried out ``decision`` (it calls this only once the action succeeded)."""
    if decision.action == "advance":
        return replace(state, step=state.step + 1, step_started=now)
    if decision.action in FINAL:
        return replace(state, outcome=FINAL[decision.action])
    return state


def start(policy: Policy, candidate: str, champion: str | None, now: float) -> RolloutState:
    """The state of a newly detected candidate: at the first step."""
    return RolloutState(
        candidate=str(candidate),
        champion=None if champion is None else str(champion),
        step=0,
        step_started=now,
        started=now,
    )


# -- retraining -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RetrainDecision:
    run: bool
    reason: str


def should_retrain(
    retrain: Retrain,
    now: float,
    *,
    drift_psi: float | None = None,
    metric: float | None = None,
    baseline_metric: float | None = None,
    direction: Direction = "min",
    last_run: float | None = None,
    running: bool = False,
) -> RetrainDecision:
    """Whether the champion needs a new version: its inputs drifted (max PSI over the threshold) or its live
    metric declined by ``metric_decline`` (relative to the baseline). Not twice within ``cooldown``, never
    while a retraining run is still going. A missing or NaN measurement is no reason either way."""
    reasons = []
    if retrain.drift_threshold is not None and _finite(drift_psi) and drift_psi >= retrain.drift_threshold:
        reasons.append(f"input drift PSI {drift_psi:.3g} >= {retrain.drift_threshold:.3g}")
    if (
        retrain.metric_decline is not None
        and _finite(metric)
        and _finite(baseline_metric)
        and baseline_metric != 0
    ):
        assert metric is not None and baseline_metric is not None
        worse = (metric - baseline_metric) if direction == "min" else (baseline_metric - metric)
        decline = worse / abs(baseline_metric)
        if decline >= retrain.metric_decline:
            reasons.append(
                f"live metric {metric:.4g} vs baseline {baseline_metric:.4g}: {decline:.1%} worse (threshold {retrain.metric_decline:.1%})"
            )
    if not reasons:
        return RetrainDecision(False, "no drift or decline over the thresholds")
    if running:
        return RetrainDecision(False, f"{'; '.join(reasons)}; but a retraining run is still going")
    if last_run is not None and now - last_run < retrain.cooldown:
        return RetrainDecision(
            False,
            f"{'; '.join(reasons)}; but retrained {now - last_run:.0f}s ago (cooldown {retrain.cooldown:.0f}s)",
        )
    return RetrainDecision(True, "; ".join(reasons))
