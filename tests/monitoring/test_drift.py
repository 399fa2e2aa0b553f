from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from wolt_jupyter.monitoring.drift import drift_table, psi


def test_psi_is_near_zero_for_the_same_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=20_000)
    assert psi(ref, rng.normal(size=20_000)) < 0.01
    assert psi(ref, rng.normal(loc=1.0, size=20_000)) > 0.5
    assert psi(np.ones(100), np.ones(50)) == pytest.approx(0.0, abs=1e-9)


def test_drift_table_flags_only_the_moved_features() -> None:
    rng = np.random.default_rng(1)
    ref = pd.DataFrame(
        {
            "stable": rng.normal(size=5000),
            "moved": rng.normal(size=5000),
            "city": rng.choice(["a", "b"], 5000),
        }
    )
    cur = pd.DataFrame(
        {
            "stable": rng.normal(size=2000),
            "moved": rng.normal(loc=0.8, size=2000),
            "city": rng.choice(["a", "b"], 2000, p=[0.9, 0.1]),
        }
    )
    table = drift_table(ref, cur)
    assert list(table.index) == ["stable", "moved", "city"]
    assert not table.loc["stable", "drifted"] and table.loc["stable", "ks_p_value"] > 0.01
    assert table.loc["moved", "drifted"] and table.loc["moved", "psi"] > 0.2
    assert table.loc["city", "drifted"] and np.isnan(table.loc["city", "ks_p_value"])


def test_small_samples_of_the_same_distribution_raise_no_alarm() -> None:
    """Raw PSI on ~150 rows is ~0.1 by chance alone; the flag discounts that bias."""
    rng = np.random.default_rng(3)
    alarms = 0
    for _ in range(50):
        ref = pd.DataFrame({"x": rng.normal(size=220)})
        cur = pd.DataFrame({"x": rng.normal(size=150)})
        alarms += bool(drift_table(ref, cur).loc["x", "drifted"])
    assert alarms <= 3
    shifted = drift_table(
        pd.DataFrame({"x": rng.normal(size=220)}), pd.DataFrame({"x": rng.normal(1.0, size=150)})
    )
    assert shifted.loc["x", "drifted"]
