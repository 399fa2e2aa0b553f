"""The version, in one place: the package metadata (hatch reads this file), the CLI, the runtime's server
metadata and the runtime image tag all take it from here; the lab extension's ``package.json`` and
``server/openapi.yaml`` are checked against it by the tests."""

__version__ = "0.1.0"
