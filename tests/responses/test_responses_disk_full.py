"""A full disk under the log: counted drops and a readable message, never an exception in the server."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from wolt_jupyter.responses import ResponseWriter, read_frame


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MiB file system (tmpfs with size=): writes past it fail with ENOSPC, as on a full laptop disk."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a size-limited tmpfs (needs root, as CI has): {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_full_disk_counts_drops_and_says_so(small_disk, make_record, caplog):
    rng = np.random.default_rng(7)
    url = f"sqlite:///{small_disk / 'responses' / 'dep.db'}"
    submitted = accepted = 0
    with caplog.at_level(logging.WARNING):
        w = ResponseWriter(
            url, spool_dir=small_disk / "spool", retries=1, retry_backoff=0.01, maintenance_interval=3600
        )
        for batch in range(60):  # ~ 60 x 20 x 2,000 random floats: far more than 3 MiB
            records = [
                make_record(batch * 20 + i, inputs={"x": rng.normal(size=2000).tolist()}) for i in range(20)
            ]
            submitted += len(records)
            accepted += w.submit_many(records)  # the runtime's call: must never raise
            w.flush(30)
        assert w.disk()["free"] < 0.05 * w.disk()["total"]
        warning = (
            w.warning
        )  # while the disk is full (closing deletes settled spool files: space may come back)
        stats = w.close()
    assert stats["dropped"] > 0, stats
    # every record is accounted for: written, dropped (counted) or left in the spool for a replay
    assert stats["written"] + stats["dropped"] + stats["deferred"] == submitted
    assert accepted == stats["written"] + stats["deferred"]
    assert warning is not None and "full" in warning and str(small_disk) in warning
    assert "disk under" in caplog.text and "Traceback" not in caplog.text
    assert caplog.text.count("is full") < 10  # said once per episode, not once per dropped batch
    # what was written reads back
    assert read_frame("dep", url=url, columns=["id"])["id"].nunique() == stats["written"]
