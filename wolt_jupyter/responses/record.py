"""The logged unit: one request/response pair as one variant saw it, and the sampling rule.

Kept free of third-party imports: the serving runtime builds one of these per request on its hot path.
"""

from __future__ import annotations

from dataclasses import dataclass
from hashlib import blake2b
from typing import Any

_TWO_64 = float(2**64)
# the output a classifier's class probabilities are logged under, beside its answer (logging.probabilities)
PROBA_OUTPUT = "predict_proba"


@dataclass(slots=True)
class ResponseRecord:
    """One prediction as served by one variant.

    A request answered by a live variant and mirrored to a shadow gives two records with the same ``id``; the
    shadow's has ``shadow=True``. ``inputs``/``outputs`` map a column (tensor) name to its per-row values, e.g.
    ``{"x1": [1.0, 2.0]}`` for a two-row request. ``time`` is epoch seconds (``time.time()``).
    """

    id: str
    time: float
    deployment: str
    variant: str
    model_name: str
    model_version: str
    shadow: bool
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    latency_ms: float
    status: int
    error: str | None = None
    revision: int | None = None


def sampled_in(request_id: str, rate: float) -> bool:
    """Whether a request id is kept at sampling ``rate`` (0..1).

    A stable hash of the id (not ``random``, not Python's salted ``hash``) decides, so the live and shadow
    records of one request, written by any process, are kept or dropped together.
    """
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    digest = blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _TWO_64 < rate
