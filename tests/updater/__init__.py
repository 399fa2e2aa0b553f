"""Update-service tests. A package so its modules' names do not clash with other suites'."""
