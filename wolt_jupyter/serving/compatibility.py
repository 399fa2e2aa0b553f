"""Variants must fit: every live variant and shadow of a deployment must accept the main variant's requests.

Checked at deploy, before anything changes (a revision recorded, a process started, a manifest applied):
an A/B challenger that cannot read the main's inputs would answer its share of the traffic with 400s, and a
shadow that cannot would only log errors. The check uses the runtime's own input mapping
(:meth:`ModelAdapter.prepare`) on the request a client reading the main's metadata sends, so "fits" means
exactly "the runtime will serve it". Signatures are compared from the MLmodel files alone (no model loaded);
a variant without a signature is loaded and makes one prediction on the main's input example.
"""

from __future__ import annotations

import logging
from typing import Any

from wolt_jupyter.errors import IncompatibleVariant, one_line
from wolt_jupyter.spec import DeploymentSpec, Variant

log = logging.getLogger(__name__)


class _Described:
    """A model known by its MLmodel file only: enough for :class:`ModelAdapter`'s input mapping."""

    def __init__(self, metadata: Any) -> None:
        self.metadata = metadata
        self.input_example = None

    def predict(
        self, data: Any
    ) -> Any:  # pragma: no cover - never called: adapters are built with probe=False
        raise RuntimeError("a described model cannot predict")


def main_variant(spec: DeploymentSpec) -> Variant:
    """The variant named ``main``, else the live variant with the most traffic (as the runtime's metadata)."""
    for v in spec.live:
        if v.name == "main":
            return v
    return max(spec.live, key=lambda v: v.traffic)


def check_variants_fit(spec: DeploymentSpec) -> None:
    """Raise :class:`IncompatibleVariant` (one line naming the variant and the mismatch) when a variant or
    shadow of ``spec`` cannot take the requests its main variant takes; return when every one fits or the
    main's inputs are unknown (no signature and no input example)."""
    main = main_variant(spec)
    others = [v for v in spec.variants if v.name != main.name and v.model != main.model]
    if not others:
        return
    from mlflow.models import Model

    from wolt_jupyter.serving import ProtocolError
    from wolt_jupyter.serving.models import (
        ModelAdapter,
        artifact_location,
        example_tensors,
        synthetic_tensors,
    )

    def describe(uri: str) -> Any | None:
        try:  # from where the version's files are (the registry asked once: the deploy copies them next)
            return Model.load(artifact_location(uri))
        except Exception as exc:  # unreadable here: the runtime's load will say why, in its own words
            log.info("cannot read the MLmodel of %s (%s): compatibility not checked", uri, one_line(exc))
            return None

    main_meta = describe(main.model)
    if main_meta is None:
        return
    main_adapter = ModelAdapter(main.name, main.model, _Described(main_meta), probe=False)
    example = _input_example(main_meta, artifact_location(main.model))
    request = None
    if example is not None:
        request = example_tensors(example, main_adapter.input_metadata())
    if request is None and main_adapter.kind != "none":
        request = synthetic_tensors(main_adapter.input_metadata())
    if request is None:
        log.info(
            "main variant %s has no signature and no input example: compatibility not checked", main.name
        )
        return
    what = "the main variant's input example" if example is not None else "the main variant's signature"
    for v in others:
        meta = describe(v.model)
        if meta is None:
            continue
        role = "shadow" if v.shadow else "variant"
        adapter = ModelAdapter(v.name, v.model, _Described(meta), probe=False)
        try:
            if adapter.kind != "none":
                adapter.prepare(request)
                continue
            # no signature to compare: the variant itself answers one request shaped as the main's
            import mlflow.pyfunc

            loaded = ModelAdapter(v.name, v.model, mlflow.pyfunc.load_model(v.model, suppress_warnings=True),
                                  probe=False)  # fmt: skip
            loaded.predict_prepared(loaded.prepare(request))
        except ProtocolError as exc:
            raise IncompatibleVariant(
                f"{role} {v.name!r} ({v.model}) does not accept the inputs of {main.name!r} "
                f"({_inputs(main_adapter)}): {exc.message}"
            ) from None
        except Exception as exc:
            raise IncompatibleVariant(
                f"{role} {v.name!r} ({v.model}) has no signature and failed on {what}: {one_line(exc)}"
            ) from None


def _input_example(meta: Any, uri: str) -> Any | None:
    if getattr(meta, "saved_input_example_info", None) is None:
        return None
    try:
        return meta.load_input_example(uri)
    except Exception as exc:
        log.info("cannot read the input example of %s: %s", uri, one_line(exc))
        return None


def _inputs(adapter: Any) -> str:
    meta = adapter.input_metadata()
    if not meta:
        return "no signature"
    return ", ".join(f"{m['name']}:{m['datatype']}{m['shape']}" for m in meta)
