"""Every decision kept and shown: a JSON-lines file per deployment, a table, a card, and MLflow.

``<home>/deployments/<name>/updater/history.jsonl`` (mode 0600) gets one line per decision, appended and
flushed to disk before the loop acts on it. :func:`history_table` spreads it to one row per judged quantity:
candidate, gate or step, metric values, thresholds, the test statistic and p-value, sample sizes, the verdict
and why. A decision's webhook message is posted later (:mod:`wolt_jupyter.updater.outbox`): its outcome is a
line of its own, ``{"update": ID, "notified": …}``, folded into the decision's ``notified`` when read.
:func:`record_in_mlflow` puts the same numbers where MLflow users look: a run per candidate under
the model's experiment (a metric per check and step, the decision as tags) and tags plus a running description
on the model version.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wolt_jupyter._display import card_html, card_text, p_value_text
from wolt_jupyter.masking import mask_url
from wolt_jupyter.private import private_dir
from wolt_jupyter.updater.decide import Decision

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

HISTORY_FILE = "history.jsonl"
TAG_PREFIX = "wolt.update."
CHECK_COLUMNS = [
    "time",
    "candidate",
    "champion",
    "step",
    "check",
    "value",
    "baseline",
    "threshold",
    "statistic",
    "p_value",
    "n",
    "n_baseline",
    "interval_low",
    "interval_high",
    "verdict",
    "why",
    "action",
    "reason",
]


def updater_dir(deployment: str, home: Path | None = None) -> Path:
    """The update service's state dir of a deployment (cursor, history, rate-limit window)."""
    from wolt_jupyter.config import settings
    from wolt_jupyter.revisions import deployment_dir

    return deployment_dir(home or settings().home, deployment) / "updater"


@dataclass
class DecisionRecord:
    """One decision as stored: who, where in the rollout, what and why, with every check's numbers."""

    time: float
    deployment: str
    model: str
    candidate: str
    champion: str | None
    step: int
    step_label: str
    action: str
    reason: str
    checks: list[dict[str, Any]] = field(default_factory=list)
    notified: str | None = None  # the webhook message: pending, sent, failed, rate_limited, not_subscribed
    id: str | None = None  # the decision's id: its webhook message's Idempotency-Key

    @classmethod
    def of(
        cls,
        decision: Decision,
        *,
        deployment: str,
        model: str,
        candidate: str,
        champion: str | None,
        now: float,
    ) -> DecisionRecord:
        checks = [_clean(asdict(c)) for c in decision.checks]
        return cls(now, deployment, model, str(candidate), champion, decision.step, decision.step_label,
                   decision.action, decision.reason, checks)  # fmt: skip


def decision_id(record: DecisionRecord, basis: float) -> str:
    """A stable id: the same for the same decision made again after a restart (same deployment, model,
    candidate, step and action, and the same ``basis`` — the step's start; a hold's time), else different."""
    key = [record.deployment, record.model, record.candidate, record.step, record.action, repr(float(basis))]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:24]


def _clean(value: Any) -> Any:
    """NaN and infinities are not JSON: stored as null (the verdict already says "no value"); text (a reason
    quoting a failure) is stored with its credentials masked."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str):
        return mask_url(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


class History:
    """The decision log of one deployment: append-only JSON lines, private to the owner."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def of(cls, deployment: str, home: Path | None = None) -> History:
        return cls(updater_dir(deployment, home) / HISTORY_FILE)

    def append(self, record: DecisionRecord) -> None:
        self._append(_clean(asdict(record)))

    def note(self, decision: str, notified: str) -> None:
        """What became of decision ``decision``'s webhook message (``sent`` or ``failed``), known after the fact."""
        self._append({"update": decision, "notified": notified, "time": time.time()})

    def _append(self, doc: dict[str, Any]) -> None:
        private_dir(self.path.parent, tighten=False)
        line = json.dumps(doc, sort_keys=True, allow_nan=False) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    def records(self) -> list[DecisionRecord]:
        if not self.path.is_file():
            return []
        out, notified = [], {}
        for line in self.path.read_text().splitlines():
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
                if "update" in doc:
                    notified[doc["update"]] = doc["notified"]
                else:
                    out.append(DecisionRecord(**doc))
            except (ValueError, TypeError, KeyError):
                continue  # a torn last line after a crash: the records before it stand
        for r in out:
            r.notified = notified.get(r.id, r.notified) if r.id else r.notified
        return out


def history_table(records: list[DecisionRecord]) -> pd.DataFrame:
    """One row per check of every decision (a decision without checks gets one row), oldest first."""
    import pandas as pd

    rows = []
    for r in records:
        base = {"time": pd.to_datetime(r.time, unit="s", utc=True), "candidate": r.candidate,
                "champion": r.champion, "step": r.step_label, "action": r.action, "reason": r.reason}  # fmt: skip
        for c in r.checks or [{}]:
            interval = c.get("interval") or (None, None)
            rows.append(
                {
                    **base,
                    "check": c.get("name"),
                    "value": c.get("value"),
                    "baseline": c.get("baseline"),
                    "threshold": c.get("threshold"),
                    "statistic": c.get("statistic"),
                    "p_value": c.get("p_value"),
                    "n": c.get("n"),
                    "n_baseline": c.get("n_baseline"),
                    "interval_low": interval[0],
                    "interval_high": interval[1],
                    "verdict": c.get("verdict"),
                    "why": c.get("why"),
                }
            )
    frame = pd.DataFrame(rows, columns=CHECK_COLUMNS)
    for col in ("value", "baseline", "threshold", "statistic", "p_value", "interval_low", "interval_high"):
        frame[col] = pd.to_numeric(frame[col], errors="coerce")
    for col in ("n", "n_baseline"):
        frame[col] = frame[col].astype("Int64")
    return frame


class UpdateHistory:
    """What ``updates(NAME)`` returns: the per-candidate summary as a card, the full table in ``.table``."""

    def __init__(self, deployment: str, records: list[DecisionRecord]) -> None:
        self.deployment = deployment
        self.records = records
        self.table = history_table(records)

    def summary(self) -> list[tuple[str, str]]:
        latest: dict[str, DecisionRecord] = {}
        for r in self.records:
            latest[r.candidate] = r
        rows = [
            (f"version {v}", f"{r.action} at {r.step_label}: {r.reason}")
            for v, r in sorted(latest.items(), key=lambda kv: kv[1].time, reverse=True)
        ]
        health = service_health(self.deployment)
        if health is not None:
            since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(health["since"]))
            rows.insert(
                0, ("service", f"failing since {since} ({health['errors']} looks): {health['reason']}")
            )
        told = self.messages()
        if any(told.values()):
            words = {"sent": "sent", "pending": "waiting", "failed": "failed (see the service log)",
                     "rate_limited": "held back by the rate limit"}  # fmt: skip
            rows.append(("webhook messages", ", ".join(f"{n} {words[k]}" for k, n in told.items() if n)))
        return rows

    def messages(self) -> dict[str, int]:
        """Decisions by what became of their webhook message (a decision made again after a restart once)."""
        by_id = {r.id or str(i): r.notified for i, r in enumerate(self.records)}
        return {
            k: sum(1 for v in by_id.values() if v == k) for k in ("sent", "pending", "failed", "rate_limited")
        }

    def _repr_html_(self) -> str:
        from html import escape

        head = card_html(f"Automatic updates of {self.deployment}", self.summary() or [("decisions", "none yet")],
                         css_class="wolt-updates")  # fmt: skip
        if self.table.empty:
            return head
        shown = self.table.drop(columns=["reason"]).tail(200)
        table = shown.to_html(index=False, na_rep="—", formatters={"p_value": p_value_text})
        return f"{head}<details><summary>{escape(str(len(self.table)))} checks</summary>{table}</details>"

    def __repr__(self) -> str:
        return card_text(
            f"Automatic updates of {self.deployment}", self.summary() or [("decisions", "none yet")]
        )


HEALTH_FILE = "health.json"


def service_health(deployment: str, home: Path | None = None) -> dict[str, Any] | None:
    """What the service last said of itself when looks kept failing outside any decision (the registry
    unreachable, the deployment gone): ``{"status": "failing", "reason", "since", "errors"}``; None when well."""
    try:
        health = json.loads((updater_dir(deployment, home) / HEALTH_FILE).read_text())
    except (OSError, ValueError):
        return None
    return health if isinstance(health, dict) and health.get("status") == "failing" else None


def write_health(deployment: str, health: dict[str, Any] | None, home: Path | None = None) -> None:
    from wolt_jupyter.revisions import write_atomic

    path = updater_dir(deployment, home) / HEALTH_FILE
    if health is None:
        path.unlink(missing_ok=True)
    else:
        write_atomic(path, json.dumps(health), mode=0o600)


def updates(deployment: str) -> UpdateHistory:
    """The decision history of ``deployment``: a card in a notebook, ``.table`` for the numbers."""
    return UpdateHistory(deployment, History.of(deployment).records())


# -- MLflow ---------------------------------------------------------------------------------------------------
_KEY = re.compile(r"[^A-Za-z0-9_\-. /]")


def _metric_key(name: str) -> str:
    return _KEY.sub("_", name).strip() or "check"


def record_in_mlflow(record: DecisionRecord, c: MlflowClient | None = None) -> str:
    """Record a decision in MLflow; returns the run id (one run per candidate, found through a version tag).

    The run lives in the experiment of the version's source run (the model's experiment), else in
    ``<model>-updates``. Each check with a value becomes metrics ``<check>``/``<check> p_value`` at the step's
    index; the decision becomes tags. A decision other than hold also goes on the version: tags
    ``wolt.update.*`` and a line in its description.
    """
    from mlflow.entities import Metric, RunTag

    from wolt_jupyter._mlflow import configure, mlflow_client, translated_errors
    from wolt_jupyter.tracking import ensure_experiment

    s = configure()
    c = c or mlflow_client(s)
    with translated_errors(s):
        mv = c.get_model_version(record.model, record.candidate)
        run_id = (mv.tags or {}).get(f"{TAG_PREFIX}run_id")
        if not run_id:
            experiment_id = c.get_run(mv.run_id).info.experiment_id if mv.run_id else None
            experiment_id = experiment_id or ensure_experiment(f"{record.model}-updates", s, c)
            run = c.create_run(
                experiment_id,
                run_name=f"update {record.model} v{record.candidate}",
                tags={f"{TAG_PREFIX}deployment": record.deployment, f"{TAG_PREFIX}model": record.model,
                      f"{TAG_PREFIX}candidate": record.candidate, f"{TAG_PREFIX}champion": record.champion or ""},
            )  # fmt: skip
            run_id = run.info.run_id
            c.set_model_version_tag(record.model, record.candidate, f"{TAG_PREFIX}run_id", run_id)
        stamp = int(record.time * 1000)
        metrics = []
        for check in record.checks:
            key = _metric_key(check["name"])
            for suffix, field_name in (("", "value"), (" baseline", "baseline"), (" p_value", "p_value")):
                value = check.get(field_name)
                if isinstance(value, (int, float)) and math.isfinite(value):
                    metrics.append(Metric(f"{key}{suffix}", float(value), stamp, record.step))
        tags = {
            "action": record.action,
            "step": record.step_label,
            "reason": record.reason[:4900],
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.time)),
        }
        c.log_batch(run_id, metrics=metrics, tags=[RunTag(f"{TAG_PREFIX}{k}", v) for k, v in tags.items()])
        if record.action != "hold":
            # the action last: whoever sees the new action on the version sees its reason and step too
            for k, v in sorted(tags.items(), key=lambda kv: kv[0] == "action"):
                c.set_model_version_tag(record.model, record.candidate, f"{TAG_PREFIX}{k}", v)
            line = f"- {tags['time']} **{record.action}** at {record.step_label}: {record.reason}"
            old = (mv.description or "").rstrip()
            c.update_model_version(
                record.model, record.candidate, description=f"{old}\n{line}".strip()[-20000:]
            )
        if record.action in ("promote", "rollback", "reject"):
            c.set_terminated(run_id, "FINISHED" if record.action == "promote" else "FAILED")
    return run_id
