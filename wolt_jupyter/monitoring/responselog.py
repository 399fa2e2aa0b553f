"""The panel's series computed from the response log: the embedded source, no Prometheus needed.

Why it is fast on a big log: SQL does all counting. Rows are grouped by (time bucket, variant, shadow, latency
bin) in the database, so a million logged requests come back as a few thousand aggregate rows; latency bins
are logarithmic (``LAT_BINS_PER_E`` per factor of e, about 13% wide) and quantiles are interpolated inside a
bin, as ``histogram_quantile`` does over Prometheus buckets. Buckets that can no longer change are kept
between refreshes, so an auto-refresh reads only the newest ones. Only the prediction distribution and
shadow agreement need the payloads; they come from the newest ``sample`` records of the window, reading only
the output columns of the compact log.

Revisions: a source made with ``revision=`` (the panel's) reads only the rows of those revisions and draws
one series per run of the same models (``main (r2)`` once several runs are shown), with every revision's
start marked on the time axis. The per-second rollup carries no revision, so its rows are attributed by
time: from the second a revision logged its first row, until the next one's (a redeploy switches at once).
Without ``revision`` (None) the source is revision-blind, as Prometheus is: the cross-check reads it so.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wolt_jupyter.config import mask_url
from wolt_jupyter.monitoring.data import (
    HEALTH_COLUMNS,
    QUANTILES,
    SUMMARY_COLUMNS,
    MetricSource,
    MonitorData,
    RevisionMark,
    SourceError,
    frame,
    time_index,
)
from wolt_jupyter.responses.store import LAT_BINS_PER_E

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

PREDICTION_BINS = 30
_SEP = "\x00"  # joins variant and shadow flag into one arm key


class ResponseLogSource(MetricSource):
    """Series from the response log at ``url`` (default: each deployment's own store, the one its record
    names: :func:`~wolt_jupyter.responses.store.store_url`). ``sample`` bounds the rows whose payloads are parsed per refresh.

    Time buckets are aligned to multiples of ``step`` since the epoch, so a bucket that ended ``settle``
    seconds ago cannot change any more (the runtime writes its log within a fraction of a second) and its
    aggregate is kept: an auto-refresh re-reads only the newest buckets. A first read of a window is split
    into ``workers`` time slices read in parallel (SQLite releases the GIL while it steps).
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        revision: Any = None,
        sample: int = 20_000,
        settle: float = 10.0,
        workers: int | None = None,
    ) -> None:
        import os
        import threading

        self._lock = threading.Lock()  # a button click may race an auto-refresh over the cache
        self.url = url
        #: which revisions' rows, as ``deployments.revisions_for`` takes it (SINCE_DEPLOY re-read each
        #: refresh, so an open panel follows a redeploy); None: every row, one series a variant name
        self.revision = revision
        self.sample = int(sample)
        self.settle = float(settle)
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.name = "response log"
        # (url, deployment, step, revision starts) -> {bucket: [(revision, variant, shadow, lbin, n, errors)]},
        # settled buckets only
        self._cache: dict[tuple[str, str, float, tuple], dict[int, list[tuple]]] = {}

    def _url(self, deployment: str) -> str:
        from wolt_jupyter.responses.store import store_url

        return self.url or store_url(deployment)

    def snapshot(self, deployment: str, *, since: float, until: float, step: float) -> MonitorData:
        import time

        from wolt_jupyter.responses.store import normalize_url, sqlite_path

        step = float(step)
        url = self._url(deployment)
        parsed = normalize_url(url)
        label = f"response log {mask_url(url)}"
        path = sqlite_path(parsed)
        if path is not None and not path.is_file():
            return MonitorData.blank(
                deployment, since, until, step, label, f"no response log for {deployment!r} yet ({path})"
            )
        t0 = time.perf_counter()
        b0, b1 = math.floor(since / step), math.ceil(until / step)  # buckets [b0, b1)
        chosen = None if self.revision is None else _chosen(deployment, self.revision)
        if chosen is not None:
            label += f", {_revision_words(chosen)}"
        try:
            with self._lock:
                buckets, sample, spans = self._read(url, deployment, b0, b1, step, since, until, chosen)
        except SourceError:
            raise
        except Exception as exc:  # ResponseStoreError, a locked or corrupt file: one readable line
            raise SourceError(f"cannot read the {label}: {exc}") from None
        t1 = time.perf_counter()
        if buckets is None:
            return MonitorData.blank(
                deployment, since, until, step, label, f"no response log for {deployment!r} yet"
            )
        runs = _runs_of(deployment) if chosen is not None else {}
        buckets, sample = _series(buckets, sample, chosen, runs)
        data = _build(deployment, b0, b1, step, label, buckets, sample)
        if chosen is not None:
            data.revision_marks = _marks(spans, runs, since, until)
            if data.empty:
                data.message = (
                    f"no requests of {_revision_words(chosen)} logged for {deployment!r} in this window"
                )
        data.since, data.until = since, until  # the window asked for (buckets are aligned around it)
        data.timings = {"read_s": t1 - t0, "build_s": time.perf_counter() - t1}
        return data

    def _read(
        self,
        url: str,
        deployment: str,
        b0: int,
        b1: int,
        step: float,
        since: float,
        until: float,
        chosen: _Chosen | None,
    ) -> tuple[dict[int, list[tuple]] | None, list[Any], dict[int, tuple[float, float]]]:
        """Aggregates by bucket (rows ``(revision, variant, shadow, lbin, n, errors)``), the payload sample,
        and for a revision-aware read each revision's first and last logged time."""
        import time
        from concurrent.futures import ThreadPoolExecutor

        from sqlalchemy import inspect

        from wolt_jupyter.responses.store import CHUNKS_TABLE, make_engine, tables, translate_errors

        log_t, _ = tables()
        engine = make_engine(url, create_dir=False)
        try:
            with translate_errors(url, "read"):
                with engine.connect() as conn:
                    present = set(inspect(conn).get_table_names())
                    if log_t.name not in present:
                        return None, [], {}
                    aware = chosen is not None and CHUNKS_TABLE in present
                    spans = revision_spans(conn, deployment, until) if aware else {}
                # the revisions that may have rows in the window, by start: the rollup's rows go to the
                # newest one started by their second
                starts = tuple(sorted((math.floor(lo), r) for r, (lo, hi) in spans.items() if hi >= since))
                cache = self._cache.setdefault((url, deployment, step, starts), {})
                for b in [b for b in cache if b < b0 or b >= b1]:  # keep only this window: bounded memory
                    del cache[b]
                for key in [k for k in self._cache if k[:3] == (url, deployment, step) and k[3] != starts]:
                    del self._cache[key]  # a new revision started: the old attribution is stale
                settled = math.floor((time.time() - self.settle) / step)  # buckets before this one are final
                missing = [b for b in range(b0, b1) if b not in cache]
                wanted = None if chosen is None else chosen.revisions

                def read(r: tuple[int, int]) -> tuple[tuple[int, int], Sequence[Any]]:
                    if not (float(step).is_integer() and step >= 1):  # finer than the rollup: from the log
                        return r, _aggregate_log(url, deployment, r[0], r[1], step)
                    with engine.connect() as c:
                        return r, c.execute(
                            _aggregate_query(log_t, deployment, r[0], r[1], step, starts)
                        ).all()

                def read_sample() -> list[Any]:
                    return _sample(url, deployment, since, until, self.sample, wanted)

                with ThreadPoolExecutor(max_workers=self.workers + 1) as pool:
                    sample_f = pool.submit(read_sample)
                    results = list(pool.map(read, _slices(_runs(missing), self.workers)))
                    sample = sample_f.result()
        finally:
            engine.dispose()
        fresh: dict[int, list[tuple]] = {}
        for (lo, hi), rows in results:
            for b in range(lo, hi):
                fresh[b] = []
            for b, rev, variant, shadow, lbin, n, errors in rows:
                fresh.setdefault(int(b), []).append(
                    (rev, variant, bool(shadow), int(lbin), int(n), int(errors or 0))
                )
        for b, rows in fresh.items():
            if b < settled:
                cache[b] = rows
        return {**cache, **fresh}, sample, spans


def _runs(buckets: list[int]) -> list[tuple[int, int]]:
    """Contiguous ``[lo, hi)`` runs of sorted bucket numbers."""
    runs: list[tuple[int, int]] = []
    for b in buckets:
        if runs and runs[-1][1] == b:
            runs[-1] = (runs[-1][0], b + 1)
        else:
            runs.append((b, b + 1))
    return runs


def _slices(runs: list[tuple[int, int]], parts: int) -> list[tuple[int, int]]:
    """Cut runs into about ``parts`` slices of similar length, to be read in parallel."""
    total = sum(hi - lo for lo, hi in runs)
    size = max(8, math.ceil(total / max(1, parts)))
    return [(a, min(a + size, hi)) for lo, hi in runs for a in range(lo, hi, size)]


# -- SQL --------------------------------------------------------------------------------------------------------
def _aggregate_query(
    t: Any, deployment: str, b_lo: int, b_hi: int, step: float, starts: tuple[tuple[int, int], ...] = ()
) -> Any:
    """Counts and 5xx counts by (bucket, revision, variant, shadow, latency bin) for buckets ``[b_lo, b_hi)``,
    from the writer's per-second rollup (rows per window, not per request). The rollup has no revision: a
    second belongs to the newest revision of ``starts`` ((first second, revision), oldest first) begun by
    then, NULL before any (or without ``starts``)."""
    from sqlalchemy import ColumnElement, Integer, case, cast, func, literal_column, null, select

    from wolt_jupyter.responses.store import rollup_table

    r, st = rollup_table(), int(step)
    bucket = cast(func.floor(r.c.second / st), Integer).label("b")
    keys: list[ColumnElement[Any]] = [bucket, r.c.variant, r.c.shadow, r.c.lbin]
    revision: ColumnElement[Any]
    if starts:  # integers inlined: the same expression in SELECT and GROUP BY (PostgreSQL compares them)
        newest_first: list[tuple[ColumnElement[bool], ColumnElement[Any]]] = [
            (r.c.second >= literal_column(str(int(first))), literal_column(str(int(rev))))
            for first, rev in reversed(starts)
        ]
        revision = case(*newest_first, else_=null())
        keys.insert(1, revision)
    else:
        revision = null()
    return (
        select(
            bucket,
            revision.label("rev"),
            r.c.variant,
            r.c.shadow,
            r.c.lbin,
            func.sum(r.c.n).label("n"),
            func.sum(r.c.errors),
        )
        .where(r.c.deployment == deployment, r.c.second >= b_lo * st, r.c.second < b_hi * st)
        .group_by(*keys)
    )


def _aggregate_log(url: str, deployment: str, b_lo: int, b_hi: int, step: float) -> list[tuple]:
    """The same aggregates for a step the per-second rollup cannot give, from the log's compact columns
    (each row's own revision)."""
    import numpy as np

    from wolt_jupyter.responses.query import read_table
    from wolt_jupyter.responses.store import MIN_LATENCY_MS

    cols = ["time", "revision", "variant", "shadow", "latency_ms", "status", "_row"]
    table, _ = read_table(deployment, b_lo * step, url=url, until=b_hi * step, columns=cols)
    if table is None or not table.num_rows:
        return []
    d = table.filter(table["_row"].to_numpy() == 0).to_pydict()
    revisions = d.get("revision") or [None] * len(d["time"])
    counts: dict[tuple, list[int]] = {}
    for t, rev, v, sh, lat, status in zip(
        d["time"], revisions, d["variant"], d["shadow"], d["latency_ms"], d["status"], strict=True
    ):
        lbin = int(np.floor(np.log(max(lat, MIN_LATENCY_MS)) * LAT_BINS_PER_E))
        slot = counts.setdefault((int(t // step), rev, v, bool(sh), lbin), [0, 0])
        slot[0] += 1
        slot[1] += status >= 500
    return [(*k, n, e) for k, (n, e) in counts.items()]


def _sample(
    url: str, deployment: str, since: float, until: float, limit: int, revisions: list[int] | None = None
) -> list[tuple]:
    """(id, time, revision, variant, shadow, outputs) of the newest ``limit`` records in the window (of
    ``revisions`` only, when given), outputs as ``{name: [value per row]}``: what the prediction histogram
    and shadow agreement need."""
    from wolt_jupyter.responses.query import read_table

    cols = ["id", "time", "revision", "variant", "shadow", "_row", "output*"]
    table, _ = read_table(
        deployment, since, url=url, until=until, limit=limit, columns=cols, revision=revisions
    )
    if table is None or not table.num_rows:
        return []
    d = table.to_pydict()
    revs = d.get("revision") or [None] * table.num_rows
    outs = [c for c in d if c.startswith("output")]
    sample: list[tuple] = []
    for i, row in enumerate(d["_row"]):
        if row == 0:
            sample.append(
                (d["id"][i], d["time"][i], revs[i], d["variant"][i], d["shadow"][i], {c: [] for c in outs})
            )
        for c in outs:
            sample[-1][5][c].append(d[c][i])
    return sample[::-1]  # newest first, as the panel expects


# -- revisions --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Chosen:
    """The revisions a revision-aware read shows: ``revisions`` (None: every one) as the source was asked."""

    revisions: list[int] | None
    asked: Any


def _chosen(deployment: str, revision: Any) -> _Chosen:
    from wolt_jupyter.deployments import revisions_for

    return _Chosen(revisions_for(deployment, revision), revision)


def _revision_words(chosen: _Chosen) -> str:
    from wolt_jupyter.deployments import revisions_text

    return revisions_text(chosen.revisions, chosen.asked, short=True)


def revision_spans(conn: Any, deployment: str, until: float) -> dict[int, tuple[float, float]]:
    """First and last logged time of each revision with rows before ``until``, from the chunk index; only
    chunks holding several revisions (a batch or a compaction across a redeploy) are decoded, and only their
    ``time`` and ``revision`` columns."""
    import pyarrow.compute as pc
    from sqlalchemy import func, select

    from wolt_jupyter.responses.columnar import decode
    from wolt_jupyter.responses.store import chunks_table

    c = chunks_table()
    mine = (c.c.deployment == deployment) & (c.c.t_min < until) & c.c.rev_min.is_not(None)
    spans: dict[int, tuple[float, float]] = {}

    def add(rev: int, lo: float, hi: float) -> None:
        old = spans.get(rev)
        spans[rev] = (lo, hi) if old is None else (min(old[0], lo), max(old[1], hi))

    single = select(c.c.rev_min, func.min(c.c.t_min), func.max(c.c.t_max)).where(
        mine, c.c.rev_min == c.c.rev_max
    )
    for rev, lo, hi in conn.execute(single.group_by(c.c.rev_min)):
        add(int(rev), float(lo), float(hi))
    for (data,) in conn.execute(select(c.c.data).where(mine, c.c.rev_min != c.c.rev_max)):
        table = decode(data, ["time", "revision"])
        table = table.filter(pc.is_valid(table["revision"]))
        for group in table.group_by("revision").aggregate([("time", "min"), ("time", "max")]).to_pylist():
            add(int(group["revision"]), float(group["time_min"]), float(group["time_max"]))
    return spans


def _runs_of(deployment: str) -> dict[int, int]:
    """Revision -> first revision of its run of the same models (:meth:`RevisionStore.model_runs`); empty
    where this machine has no record of the deployment (a shared store): then each revision is its own."""
    from wolt_jupyter.config import settings
    from wolt_jupyter.revisions import RevisionStore

    try:
        return RevisionStore(settings().home).model_runs(deployment)
    except Exception:  # an unreadable record must not take the panel down: one run per revision
        return {}


def _series(
    buckets: dict[int, list[tuple]], sample: list[tuple], chosen: _Chosen | None, runs: dict[int, int]
) -> tuple[dict[int, list[tuple]], list[tuple]]:
    """The read rows with each (revision, variant) turned into its series name, rows of other revisions
    dropped: the variant's name while one run is shown (or revision-blind), ``main (r2)`` once several are,
    where r2 is the run's first revision."""
    wanted = None if chosen is None or chosen.revisions is None else set(chosen.revisions)

    def keep(rev: Any) -> bool:
        return wanted is None or rev in wanted

    shown = {runs.get(r[0], r[0]) for rows in buckets.values() for r in rows if keep(r[0])}
    shown |= {runs.get(x[2], x[2]) for x in sample if keep(x[2])}
    several = chosen is not None and len(shown) > 1

    def name(rev: Any, variant: str) -> str:
        if not several:
            return variant
        run = runs.get(rev, rev)
        return f"{variant} (r{run})" if run is not None else f"{variant} (no revision)"

    named: dict[int, list[tuple]] = {}
    for b, rows in buckets.items():
        merged: dict[tuple, list[int]] = {}
        for rev, variant, shadow, lbin, n, errors in rows:
            if keep(rev):
                slot = merged.setdefault((name(rev, variant), shadow, lbin), [0, 0])
                slot[0] += n
                slot[1] += errors
        named[b] = [(*k, n, e) for k, (n, e) in merged.items()]
    picked = [(i, t, name(rev, v), sh, out) for i, t, rev, v, sh, out in sample if keep(rev)]
    return named, picked


def _marks(
    spans: dict[int, tuple[float, float]], runs: dict[int, int], since: float, until: float
) -> tuple[RevisionMark, ...]:
    """Every revision that began inside the window, marked where its first row was logged."""
    out = []
    for rev, (first, _last) in sorted(spans.items(), key=lambda kv: kv[1][0]):
        if since <= first < until:
            same = runs.get(rev, rev) != rev
            out.append(RevisionMark(first, f"r{rev}" + (" (same models)" if same else ""), rev))
    return tuple(out)


# -- numbers ----------------------------------------------------------------------------------------------------
def hist_quantiles(cube: np.ndarray, lmin: int, q: float) -> np.ndarray:
    """The ``q`` quantile in seconds from log-bin counts along the last axis (bin ``lmin + i``),
    interpolated geometrically inside the bin; NaN where there are no counts."""
    import numpy as np

    total = cube.sum(axis=-1)
    cum = np.cumsum(cube, axis=-1)
    rank = q * total
    idx = np.minimum((cum < rank[..., None]).sum(axis=-1), cube.shape[-1] - 1)
    at = np.take_along_axis(cube, idx[..., None], axis=-1)[..., 0]
    below = np.take_along_axis(cum, idx[..., None], axis=-1)[..., 0] - at
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.clip(np.where(at > 0, (rank - below) / np.where(at > 0, at, 1), 0.0), 0.0, 1.0)
        out = np.exp((lmin + idx + frac) / LAT_BINS_PER_E) / 1000.0  # bin edges as the store defines them
    return np.where(total > 0, out, np.nan)


def _build(
    deployment: str,
    b0: int,
    b1: int,
    step: float,
    label: str,
    buckets: dict[int, list[tuple]],
    sample: list[Any],
) -> MonitorData:
    import numpy as np
    import pandas as pd

    index = time_index(step * np.arange(b0, b1, dtype="float64"))
    since, until = b0 * step, b1 * step
    rows = [(b - b0, *r) for b in range(b0, b1) for r in buckets.get(b, ())]
    if not rows:
        return MonitorData.blank(
            deployment, since, until, step, label, f"no requests logged for {deployment!r} in this window"
        )
    b_col, keys, lbin_col, n_col, err_col = zip(
        *((r[0], f"{r[1]}{_SEP}{int(r[2])}", r[3], r[4], r[5]) for r in rows), strict=True
    )
    arms, arm = np.unique(np.array(keys, dtype=object), return_inverse=True)
    b_arr, lbin = np.asarray(b_col, dtype=np.int64), np.asarray(lbin_col, dtype=np.int64)
    n, err = np.asarray(n_col, dtype="float64"), np.asarray(err_col, dtype="float64")
    nb, na = b1 - b0, len(arms)
    lmin, nl = int(lbin.min()), int(lbin.max() - lbin.min() + 1)
    cube = np.bincount((b_arr * na + arm) * nl + (lbin - lmin), weights=n, minlength=nb * na * nl).reshape(
        nb, na, nl
    )
    counts = cube.sum(axis=-1)
    errors = np.bincount(b_arr * na + arm, weights=err, minlength=nb * na).reshape(nb, na)
    names = [str(a).split(_SEP)[0] for a in arms]
    is_shadow = np.array([str(a).endswith(_SEP + "1") for a in arms])
    live = np.flatnonzero(~is_shadow)
    live_names = [names[i] for i in live]

    requests = pd.DataFrame(counts[:, live] / step, index=index, columns=live_names)
    error_rate = pd.DataFrame(
        np.where(counts[:, live] > 0, errors[:, live] / np.maximum(counts[:, live], 1), np.nan),
        index=index,
        columns=live_names,
    )
    latency = {
        k: pd.DataFrame(hist_quantiles(cube[:, live, :], lmin, q), index=index, columns=live_names)
        for k, q in QUANTILES.items()
    }
    whole = cube.sum(axis=0)  # (arms, latency bins) over the window
    tot = whole.sum(axis=-1)
    live_total = float(tot[live].sum())
    summary = pd.DataFrame(
        {
            "shadow": is_shadow,
            "requests": tot,
            "share": np.where(is_shadow, np.nan, tot / live_total if live_total else np.nan),
            "error_rate": np.where(tot > 0, errors.sum(axis=0) / np.maximum(tot, 1), np.nan),
            **{k: hist_quantiles(whole, lmin, q) for k, q in QUANTILES.items()},
            "agreement": np.nan,
        },
        index=pd.Index(names, name="variant"),
    )[list(SUMMARY_COLUMNS)]
    summary = summary[~summary.index.duplicated()].sort_index()  # a name both live and shadow: keep one

    predictions, agreement, per_shadow = _from_sample(sample, since, step, index)
    for name, value in per_shadow.items():
        if name in summary.index:
            summary.loc[name, "agreement"] = value
    log_health = pd.DataFrame(
        {"queued": np.nan, "written": counts.sum(axis=1) / step, "dropped": np.nan}, index=index
    )[list(HEALTH_COLUMNS)]
    return MonitorData(
        deployment=deployment,
        since=since,
        until=until,
        step=step,
        source=label,
        requests=requests,
        error_rate=error_rate,
        latency=latency,
        predictions=predictions,
        agreement=agreement,
        log_health=log_health,
        summary=summary,
        shadows=tuple(sorted(names[i] for i in np.flatnonzero(is_shadow))),
    )


def _first_values(outputs: Any) -> list[float]:
    """The first output's numbers (first column per row) from one logged ``outputs`` payload (a dict, or its
    JSON text); [] if none."""
    import orjson

    doc = outputs
    if isinstance(outputs, (str, bytes)):
        try:
            doc = orjson.loads(outputs)
        except orjson.JSONDecodeError:
            return []
    if not isinstance(doc, dict) or not doc:
        return []
    first = next(iter(doc.values()))
    if not isinstance(first, list):
        first = [first]
    out = []
    for x in first:
        while isinstance(x, list) and x:
            x = x[0]
        if isinstance(x, (int, float)):  # bool included: a class label
            out.append(float(x))
        else:
            return []  # strings, objects: no numeric distribution
    return out


def _same(a: list[float], b: list[float]) -> bool:
    """The runtime's shadow comparison (``numpy.allclose``, rtol 1e-6, atol 1e-9), on plain lists."""
    if len(a) != len(b):
        return False
    return all(
        x == y or abs(x - y) <= 1e-9 + 1e-6 * abs(y) or (x != x and y != y) for x, y in zip(a, b, strict=True)
    )


def _from_sample(
    sample: list[Any], since: float, step: float, index: pd.DatetimeIndex
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, float]]:
    """Prediction histogram per variant, and shadow agreement over time, from the sampled payloads."""
    import numpy as np
    import pandas as pd

    values: dict[str, list[float]] = {}
    live_by_id: dict[str, tuple[str, list[float]]] = {}
    shadow_rows: list[tuple[str, float, str, list[float]]] = []
    for rid, t, variant, is_shadow, outputs in sample:
        v = _first_values(outputs)
        values.setdefault(variant, []).extend(v)
        if is_shadow:
            shadow_rows.append((rid, t, variant, v))
        else:
            live_by_id[rid] = (variant, v)
    flat = {k: np.asarray(v, dtype="float64") for k, v in values.items()}
    flat = {k: v[np.isfinite(v)] for k, v in flat.items()}
    allv = np.concatenate([v for v in flat.values() if v.size] or [np.empty(0)])
    if allv.size:
        lo, hi = float(allv.min()), float(allv.max())
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = np.linspace(lo, hi, PREDICTION_BINS + 1)
        hist = {k: np.histogram(v, bins=edges)[0] for k, v in sorted(flat.items())}
        predictions = pd.DataFrame(hist, index=pd.Index(edges[1:], name="le"), dtype="float64")
    else:
        predictions = pd.DataFrame(index=pd.Index([], dtype="float64", name="le"), dtype="float64")

    pairs: dict[str, tuple[list[int], list[bool]]] = {}
    for rid, t, variant, v in shadow_rows:
        live = live_by_id.get(rid)
        if live is None or live[0] == variant or not v or not live[1]:
            continue
        bs, oks = pairs.setdefault(f"{variant} vs {live[0]}", ([], []))
        bs.append(int((t - since) // step))
        oks.append(_same(v, live[1]))
    cols = {}
    per_shadow: dict[str, list[bool]] = {}
    for key, (bs, oks) in sorted(pairs.items()):
        b, hit = np.asarray(bs), np.asarray(oks, dtype="float64")
        ok = (b >= 0) & (b < len(index))
        tot = np.bincount(b[ok], minlength=len(index)).astype("float64")
        agree = np.bincount(b[ok], weights=hit[ok], minlength=len(index))
        cols[key] = np.where(tot > 0, agree / np.maximum(tot, 1), np.nan)
        per_shadow.setdefault(key.split(" vs ")[0], []).extend(oks)
    agreement = pd.DataFrame(cols, index=index, dtype="float64") if cols else frame().reindex(index)
    return predictions, agreement, {k: float(np.mean(v)) for k, v in per_shadow.items() if v}
