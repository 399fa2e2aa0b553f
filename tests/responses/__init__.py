"""Response-log tests. A package so its conftest does not take the bare ``conftest`` module name others import."""
