"""The automatic update service: a policy, a pure decision function, and the I/O around them.

A new version in the MLflow registry (:mod:`.watch`) goes through the offline gate and the replay gate
(:mod:`.gates`), then a shadow step and canary steps whose live observations are judged by
:func:`.decide.decide` (hard limits and an always-valid sequential test). Every decision is kept in the
deployment's history (:mod:`.history`) and told to a webhook (:mod:`.notify`).

Importing this package imports nothing heavy; each module imports MLflow, pandas or scikit-learn where used.
"""

from __future__ import annotations
