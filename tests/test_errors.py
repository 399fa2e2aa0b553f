"""The one error tree: every domain error in errors.py, drawn in its docstring, each with its HTTP status."""

from __future__ import annotations

import re

import pytest

from wolt_jupyter import errors
from wolt_jupyter.errors import (
    ClusterError,
    ClusterUnreachable,
    ConfigError,
    DeployFailed,
    DeploymentBusy,
    EndpointError,
    InvalidArgument,
    NotFound,
    PolicyError,
    ProtocolError,
    ResponseStoreError,
    SourceError,
    TrackingUnavailable,
    WoltError,
    http_status,
)


def _domain_errors() -> list[type[WoltError]]:
    return [v for v in vars(errors).values() if isinstance(v, type) and issubclass(v, WoltError)]


def test_the_docstring_draws_every_error_with_its_parent_and_status() -> None:
    drawn = {}
    for line in (errors.__doc__ or "").splitlines():
        if m := re.match(r"^[ │]*(?:├── |└── )?(\w+) \((\d{3}|4xx, per instance)\)", line):
            drawn[m[1]] = (m.start(1) // 4 - 1, m[2])  # the block is indented 4; each level adds 4
    assert set(drawn) == {cls.__name__ for cls in _domain_errors()}
    for cls in _domain_errors():
        depth, status = drawn[cls.__name__]
        if status.isdigit():
            assert cls.status == int(status), cls
        parents = [b for b in cls.__mro__[1:] if issubclass(b, WoltError)]
        assert depth == len(parents), (
            f"{cls.__name__} is drawn at depth {depth}, has {len(parents)} ancestors"
        )


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (InvalidArgument("x"), 400),
        (PolicyError("x"), 400),
        (NotFound("x"), 404),
        (DeploymentBusy("x"), 409),
        (ProtocolError(413, "x"), 413),
        (ConfigError("x"), 500),
        (DeployFailed("x"), 500),
        (EndpointError("x"), 502),
        (ClusterError("x"), 502),
        (ClusterUnreachable("x"), 503),
        (TrackingUnavailable("x"), 503),
        (ResponseStoreError("x"), 503),
        (SourceError("x"), 503),
        (ConnectionRefusedError("x"), 503),
        (TimeoutError("x"), 503),
        (KeyError("x"), 500),
    ],
)
def test_each_error_maps_to_its_status(exc: BaseException, status: int) -> None:
    assert http_status(exc) == status


def test_old_import_paths_name_the_same_classes() -> None:
    """Modules that used to define an error re-export the one in errors.py (one class, whatever the path)."""
    from wolt_jupyter.backends.local import DeployFailed as local_error
    from wolt_jupyter.client import EndpointError as client_error
    from wolt_jupyter.kubeclient import ClusterError as kube_error
    from wolt_jupyter.locking import DeploymentBusy as lock_error
    from wolt_jupyter.monitoring.data import SourceError as source_error
    from wolt_jupyter.responses import ResponseStoreError as store_error
    from wolt_jupyter.serving import ProtocolError as protocol_error
    from wolt_jupyter.updater.policy import PolicyError as policy_error

    assert (kube_error, local_error, client_error, lock_error) == (
        ClusterError,
        DeployFailed,
        EndpointError,
        DeploymentBusy,
    )
    assert (source_error, store_error, protocol_error, policy_error) == (
        SourceError,
        ResponseStoreError,
        ProtocolError,
        PolicyError,
    )
