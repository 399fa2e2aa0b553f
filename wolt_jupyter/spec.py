"""DeploymentSpec: what runs, never how. A small validated value every target takes the same way.

```yaml
name: eta-predictor
variants:
  - {name: main, model: "models:/eta@champion", traffic: 90}
  - {name: challenger, model: "models:/eta/7", traffic: 10, timeout: 0.5}   # seconds; then the champion answers
  - {name: shadow, model: "models:/eta/8", shadow: true}
routing: {sticky_key: user_id}
logging: {responses: true, sample: 1.0}
limits: {max_body: 33554432, header_timeout: 10}   # optional: what one client may make the runtime hold
```

Validation here is structural: first the whole document against one JSON schema (:data:`SPEC_SCHEMA`, so a
wrong type anywhere is one line naming the field), then the rules a schema cannot say (names, weights summing
to 100, URI form, resource quantities in Kubernetes' grammar). Whether a model URI exists in the registry is
checked, and aliases pinned to versions, at deploy time (:meth:`DeploymentSpec.pinned`). What a particular
target cannot honour is refused by that target's renderer (:mod:`wolt_jupyter.backends.render`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import Any

from wolt_jupyter.errors import InvalidArgument
from wolt_jupyter.units import parse_age, parse_bytes
from wolt_jupyter.untrusted import shown, shown_value

_NUMBER_OR_TEXT = {"type": ["string", "number"]}
# the runtime's HTTP and gRPC limits a spec may set (wolt_jupyter.serving.http.Limits has the defaults)
LIMIT_FIELDS = {
    "max_body": "integer",
    "max_header_count": "integer",
    "max_header_bytes": "integer",
    "max_url_bytes": "integer",
    "header_timeout": "number",
    "body_timeout": "number",
    "idle_timeout": "number",
    "max_connections": "integer",
    "max_unsent_bytes": "integer",
    "max_pipelined": "integer",
    "send_timeout": "number",
    "grpc_max_concurrent_rpcs": "integer",
    "grpc_max_streams_per_connection": "integer",
    "grpc_max_infer_streams": "integer",
}
SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["name", "variants"],
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string"},
        "variants": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "model"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "model": {"type": "string"},
                    "traffic": {"type": "integer", "minimum": 0, "maximum": 100},
                    "shadow": {"type": "boolean"},
                    # seconds a request may wait for this variant (queue and predict); then a challenger's
                    # goes to the champion and the champion's is a 504
                    "timeout": {"type": ["number", "null"]},
                },
            },
        },
        "routing": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "properties": {
                "sticky_key": {"type": ["string", "null"], "minLength": 1},
                "champion": {"type": ["string", "null"], "minLength": 1},
            },
        },
        "logging": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "properties": {
                "responses": {"type": "boolean"},
                "sample": {"type": "number", "minimum": 0, "maximum": 1},
                # scikit-learn classifiers log predict_proba beside their answers (the project's runtime)
                "probabilities": {"type": "boolean"},
                # how long and how much of the response log to keep (default: the settings'
                # response_max_age / response_max_bytes); e.g. {max_age: 14d, max_bytes: 5GB}
                "retention": {
                    "type": ["object", "null"],
                    "additionalProperties": False,
                    "properties": {"max_age": _NUMBER_OR_TEXT, "max_bytes": _NUMBER_OR_TEXT},
                },
                # while the log cannot keep a record (its disk is full): answer anyway and count the
                # unlogged rows (serve), or answer 503 with Retry-After (refuse)
                "on_full": {"type": "string"},
            },
        },
        "replicas": {"type": "integer", "minimum": 1},
        "resources": {
            "type": ["object", "null"],
            "additionalProperties": {
                "anyOf": [_NUMBER_OR_TEXT, {"type": "object", "additionalProperties": _NUMBER_OR_TEXT}]
            },
        },
        "limits": {
            "type": ["object", "null"],
            "additionalProperties": False,
            "properties": {k: {"type": t, "exclusiveMinimum": 0} for k, t in LIMIT_FIELDS.items()},
        },
    },
}


def import_jsonschema() -> Any:
    """``jsonschema``, imported without ``rfc3987_syntax``: when that is installed, jsonschema's import builds
    ~40 Lark grammars for its "iri" format checker (1 s on a quiet machine, 7 s on a busy one; it was most of
    a deployment's cold start). We never check formats; where something imported jsonschema first, that
    import is kept as it is."""
    import sys

    if "jsonschema" not in sys.modules and "rfc3987_syntax" not in sys.modules:
        sys.modules["rfc3987_syntax"] = None  # type: ignore[assignment]  # its import fails; jsonschema allows that
        try:
            import jsonschema
        finally:
            del sys.modules["rfc3987_syntax"]
    import jsonschema

    return jsonschema


def schema_error(data: Any, schema: dict[str, Any], what: str) -> str | None:
    """The first way ``data`` breaks ``schema``, as one line naming the field (``variants[0].traffic``)."""
    jsonschema = import_jsonschema()
    from jsonschema.exceptions import best_match

    err = best_match(jsonschema.Draft202012Validator(schema).iter_errors(data))
    if err is None:
        return None
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path).lstrip(".")
    full = repr(err.instance)  # jsonschema's message starts with it: quoted back bounded
    message = err.message.replace(full, shown_value(err.instance, 80), 1) if len(full) > 80 else err.message
    return f"malformed {what} at {shown(where or 'top level', 80)}: {shown(message, 200)}"


DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# a request parameter or HTTP header name: what the router reads the sticky key from
_STICKY_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,62}")
# Kubernetes resource quantity grammar (k8s.io/apimachinery resource.Quantity, the pattern the published CRDs
# carry for resources.requests/limits), without the sign: a negative request is refused by the API server
_QUANTITY = re.compile(
    r"(?P<num>([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(?P<suffix>([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?"
)
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
# cpu, memory, ephemeral-storage, hugepages-<size>, or an extended resource such as nvidia.com/gpu
_RESOURCE_NAME = re.compile(
    r"(cpu|memory|ephemeral-storage|hugepages-[0-9A-Za-z]+|"
    r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)"
)
_MODEL_URI = re.compile(r"(models:/[^/@\s]+(/[^/\s]+|@[^/\s]+)|runs:/\S+|models:/m-\w+|file:\S+|/\S+)")


def check_dns_label(value: object, what: str) -> str:
    """Names that end up in Kubernetes must be DNS-1123 labels: checked before anything is sent."""
    if not isinstance(value, str) or not value or len(value) > 63 or not DNS1123_LABEL.fullmatch(value):
        raise InvalidArgument(
            f"{what} {shown_value(value)} is not a DNS-1123 label: use 1-63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit (e.g. 'eta-predictor')"
        )
    return value


def parse_quantity(value: Any, what: str) -> Decimal:
    """A Kubernetes quantity (``250m``, ``1.5``, ``512Mi``, ``1e3``) as a number, or one line saying why not."""
    text = str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value
    match = _QUANTITY.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise InvalidArgument(
            f"{what} {shown_value(value)} is not a Kubernetes quantity: use a non-negative number with an optional "
            "suffix, e.g. cpu '500m' or '2', memory '512Mi' or '1Gi' (not 'GB', 'half')"
        )
    number, suffix = Decimal(match["num"]), match["suffix"] or ""
    if suffix in _BINARY:
        return number * _BINARY[suffix]
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number.scaleb(int(Decimal(suffix[1:])))  # e/E exponent


def check_resources(resources: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``resources`` as ``{requests: {...}, limits: {...}}`` with every name and quantity checked.

    Accepts the container form (``requests``/``limits``) or a flat dict of requests. Requests above their
    limit are refused here, as the API server would refuse the pod.
    """
    if not isinstance(resources, Mapping):
        raise InvalidArgument(
            f"resources must be a mapping such as {{cpu: 500m, memory: 1Gi}}, got {shown_value(resources)}"
        )
    if not resources:
        return {}
    if set(resources) <= {"requests", "limits"}:
        blocks = dict(resources)
    else:
        blocks = {"requests": resources}
    out: dict[str, dict[str, str]] = {}
    parsed: dict[str, dict[str, Decimal]] = {}
    for block, values in blocks.items():
        if not isinstance(values, Mapping) or not values:
            raise InvalidArgument(f"resources.{block} must be a non-empty mapping such as {{cpu: 500m}}")
        for name, value in values.items():
            if not isinstance(name, str) or not _RESOURCE_NAME.fullmatch(name):
                raise InvalidArgument(
                    f"resources.{block}: {shown_value(name)} is not a Kubernetes resource name; use cpu, memory, "
                    "ephemeral-storage or an extended resource such as nvidia.com/gpu"
                )
            parsed.setdefault(block, {})[name] = parse_quantity(value, f"resources.{block}.{name}")
            out.setdefault(block, {})[name] = str(value)
    for name, request in parsed.get("requests", {}).items():
        limit = parsed.get("limits", {}).get(name)
        if limit is not None and request > limit:
            raise InvalidArgument(
                f"resources: {name} request {out['requests'][name]} is above its limit "
                f"{out['limits'][name]}; a request must not exceed its limit"
            )
    return out


def _check_type(value: Any, kind: type | tuple[type, ...], what: str, example: str) -> None:
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise InvalidArgument(f"{what} must be {example}, got {shown_value(value)}")
    if not isinstance(value, kind):
        raise InvalidArgument(f"{what} must be {example}, got {shown_value(value)}")


MAX_TIMEOUT_S = 3600  # variants[i].timeout: above an hour is a mistake, not a limit


@dataclass(frozen=True)
class Variant:
    """One model behind the endpoint: live (with a traffic weight) or a shadow (sees copies, answers nobody)."""

    name: str
    model: str
    traffic: int = 0
    shadow: bool = False
    timeout: float | None = None  # seconds a request may wait (queue + predict); None: the runtime's default

    def validate(self) -> None:
        check_dns_label(self.name, "variant name")
        if not isinstance(self.model, str) or not _MODEL_URI.fullmatch(self.model):
            raise InvalidArgument(
                f"variant {shown_value(self.name)}: model {shown_value(self.model)} is not a model URI; expected "
                "'models:/NAME/VERSION', 'models:/NAME@ALIAS', 'runs:/RUN_ID/PATH' or a local path"
            )
        if (
            isinstance(self.traffic, bool)
            or not isinstance(self.traffic, int)
            or not 0 <= self.traffic <= 100
        ):
            raise InvalidArgument(
                f"variant {shown_value(self.name)}: traffic must be a whole number 0-100, got {shown_value(self.traffic)}"
            )
        _check_type(self.shadow, bool, f"variant {shown_value(self.name)}: shadow", "true or false")
        if self.timeout is not None and (
            isinstance(self.timeout, bool)
            or not isinstance(self.timeout, (int, float))
            or not 0 < self.timeout <= MAX_TIMEOUT_S
        ):
            raise InvalidArgument(
                f"variant {shown_value(self.name)}: timeout must be a number of seconds above 0 and at most "
                f"{MAX_TIMEOUT_S} (e.g. 0.5), got {shown_value(self.timeout)}"
            )
        if self.shadow and self.traffic:
            raise InvalidArgument(
                f"variant {shown_value(self.name)} is a shadow and has traffic {self.traffic}: shadows take no traffic "
                "(they get a copy of every request); drop the weight or the shadow flag"
            )


@dataclass(frozen=True)
class Routing:
    """``sticky_key``: same key, same variant. ``champion``: the live variant a failed request of another
    variant is retried on, at any weight (0 included: an update service keeps the champion loaded and warm
    while a candidate takes all traffic); default the live variant with the most traffic."""

    sticky_key: str | None = None
    champion: str | None = None

    def validate(self) -> None:
        if self.sticky_key is not None and (
            not isinstance(self.sticky_key, str) or not _STICKY_KEY.fullmatch(self.sticky_key)
        ):
            raise InvalidArgument(
                f"routing.sticky_key {shown_value(self.sticky_key)} must name a request parameter or header: "
                "1-63 letters, digits, '_', '.', '-', starting with a letter or '_' (e.g. user_id)"
            )


ON_FULL = ("serve", "refuse")  # logging.on_full: what the runtime does while its log's disk is full


@dataclass(frozen=True)
class LoggingSpec:
    responses: bool = True
    sample: float = 1.0
    retention: Mapping[str, Any] = field(default_factory=dict)  # {max_age: 14d, max_bytes: 5GB}
    probabilities: bool = False  # classifiers also log class probabilities (for estimating accuracy)
    on_full: str = "serve"  # the log's disk is full: "serve" answers and counts, "refuse" answers 503

    def validate(self) -> None:
        _check_type(self.responses, bool, "logging.responses", "true or false")
        _check_type(self.probabilities, bool, "logging.probabilities", "true or false")
        _check_type(self.sample, (int, float), "logging.sample", "a number between 0 and 1")
        if not 0.0 <= float(self.sample) <= 1.0:
            raise InvalidArgument(f"logging.sample must be between 0 and 1, got {shown_value(self.sample)}")
        if self.on_full not in ON_FULL:
            raise InvalidArgument(
                f"logging.on_full must be serve (answer, count the rows not logged) or refuse (503 until "
                f"the log can write), not {shown_value(self.on_full)}"
            )
        check_retention(self.retention or {})


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    variants: tuple[Variant, ...]
    routing: Routing = field(default_factory=Routing)
    logging: LoggingSpec = field(default_factory=LoggingSpec)
    replicas: int = 1
    resources: Mapping[str, Any] = field(default_factory=dict)
    limits: Mapping[str, Any] = field(default_factory=dict)

    # -- views ---------------------------------------------------------------------------------------------
    @property
    def live(self) -> tuple[Variant, ...]:
        return tuple(v for v in self.variants if not v.shadow)

    @property
    def shadows(self) -> tuple[Variant, ...]:
        return tuple(v for v in self.variants if v.shadow)

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise InvalidArgument(
            f"deployment {shown_value(self.name)} has no variant {shown_value(name)}; variants: {', '.join(v.name for v in self.variants)}"
        )

    # -- validation ----------------------------------------------------------------------------------------
    def validate(self) -> DeploymentSpec:
        check_dns_label(self.name, "deployment name")
        if not self.variants:
            raise InvalidArgument(
                f"deployment {shown_value(self.name)} has no variants: give at least one live model"
            )
        seen: set[str] = set()
        for v in self.variants:
            v.validate()
            if v.name in seen:
                raise InvalidArgument(
                    f"variant name {shown_value(v.name)} is used twice; variant names must be unique"
                )
            seen.add(v.name)
        if not self.live:
            raise InvalidArgument("every variant is a shadow: at least one live variant must answer requests")
        total = sum(v.traffic for v in self.live)
        if total != 100:
            weights = ", ".join(f"{v.name}={v.traffic}" for v in self.live)
            raise InvalidArgument(f"live variant weights must sum to 100, got {total} ({weights})")
        self.routing.validate()
        champion = self.routing.champion
        if champion is not None and champion not in {v.name for v in self.live}:
            raise InvalidArgument(
                f"routing.champion {shown_value(champion)} must name a live variant ({', '.join(v.name for v in self.live)}); "
                "drop it to retry on the variant with the most traffic"
            )
        self.logging.validate()
        check_resources(self.resources)
        if isinstance(self.replicas, bool) or not isinstance(self.replicas, int) or self.replicas < 1:
            raise InvalidArgument(f"replicas must be a whole number >= 1, got {shown_value(self.replicas)}")
        return self

    # -- changes (each returns a new, validated spec) -------------------------------------------------------
    def with_traffic(self, weights: Mapping[str, int]) -> DeploymentSpec:
        """New weights for the named live variants; live variants not named get 0."""
        for name in weights:
            if self.variant(name).shadow:
                raise InvalidArgument(
                    f"variant {shown_value(name)} is a shadow; promote it or redeploy it as a live variant"
                )
        variants = tuple(
            v if v.shadow else replace(v, traffic=int(weights.get(v.name, 0))) for v in self.variants
        )
        return replace(self, variants=variants).validate()

    def promoted(self, name: str) -> DeploymentSpec:
        """``name`` becomes the only live variant (100%) and the champion; shadows are kept, other live
        variants dropped."""
        self.variant(name)  # one line when there is no such variant
        variants = tuple(
            replace(v, traffic=100, shadow=False) if v.name == name else v
            for v in self.variants
            if v.name == name or v.shadow
        )
        routing = replace(self.routing, champion=None)  # the one live variant
        return replace(self, variants=variants, routing=routing).validate()

    def pinned(self, resolve: Callable[[str], str]) -> DeploymentSpec:
        """Every model URI replaced by ``resolve(uri)``, e.g. an alias pinned to ``models:/NAME/VERSION``."""
        return replace(
            self, variants=tuple(replace(v, model=resolve(v.model)) for v in self.variants)
        ).validate()

    # -- (de)serialisation -----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["variants"] = [
            {
                k: val
                for k, val in v.items()
                if not (k == "shadow" and not val)
                and not (k == "traffic" and v["shadow"])
                and not (k == "timeout" and val is None)  # specs without one read and render as before
            }
            for v in d["variants"]
        ]
        d["resources"] = dict(self.resources)
        if d["routing"].get("champion") is None:  # specs without a named champion read as before
            d["routing"].pop("champion", None)
        if d["logging"].get("retention"):
            d["logging"]["retention"] = dict(self.logging.retention)
        else:  # specs without a retention of their own read (and render) as before
            d["logging"].pop("retention", None)
        if not self.logging.probabilities:  # likewise: specs without it read and render as before
            d["logging"].pop("probabilities")
        if self.logging.on_full == "serve":  # the default: specs without it read and render as before
            d["logging"].pop("on_full")
        if self.limits:
            d["limits"] = dict(self.limits)
        else:  # the common case: specs (and manifests) without limits read as before
            d.pop("limits")
        return d

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeploymentSpec:
        if not isinstance(data, Mapping):
            raise InvalidArgument(f"a deployment spec is a mapping, got {type(data).__name__}")
        known = set(SPEC_SCHEMA["properties"])
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidArgument(
                f"unknown spec field(s) {', '.join(map(str, unknown))}; known: {', '.join(sorted(known))}"
            )
        data = {"variants": [], "name": "", **data}  # missing ones are named by validate() with the fix
        problem = schema_error(data, SPEC_SCHEMA, "deployment spec")
        if problem:
            raise InvalidArgument(problem)
        return cls(
            name=data["name"],
            variants=tuple(Variant(**v) for v in data["variants"]),
            routing=Routing(**(data.get("routing") or {})),
            logging=LoggingSpec(
                **{
                    **(data.get("logging") or {}),
                    "retention": dict((data.get("logging") or {}).get("retention") or {}),
                }
            ),
            replicas=data.get("replicas", 1),
            resources=dict(data.get("resources") or {}),
            limits=dict(data.get("limits") or {}),
        ).validate()

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> DeploymentSpec:
        from wolt_jupyter.untrusted import load_yaml

        return cls.from_dict(load_yaml(text, "spec"))


RETENTION_FIELDS = ("max_age", "max_bytes")


def check_retention(doc: Mapping[str, Any]) -> None:
    """A spec's ``logging.retention``: known fields with readable values (one line naming the field)."""
    unknown = sorted(set(doc) - set(RETENTION_FIELDS))
    if unknown:
        raise InvalidArgument(
            f"unknown logging.retention field(s) {', '.join(unknown)}; known: max_age (e.g. 14d), max_bytes (e.g. 5GB)"
        )
    if doc.get("max_age") is not None:
        parse_age(doc["max_age"], "logging.retention.max_age")
    if doc.get("max_bytes") is not None:
        parse_bytes(doc["max_bytes"], "logging.retention.max_bytes")
