"""benchmarks/weight_streaming.py runs on a real trunk's weights and reports every timing it names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_weight_streaming_reports_streamed_cached_and_prepacked_rows(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "benchmarks/weight_streaming.py", "--trunk", "tiny", "--rows", "1", "4",
                           "--repeats", "1", "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "weight_streaming.json").read_text())
    assert result["trunk"] == "tiny" and [r["rows"] for r in result["rows"]] == [1, 4]
    tiny_mb = 4 * sum(n for n in (64 * 192, 64 * 64, 64 * 384, 192 * 64)) * 6 / 1e6 + 4 * 1024 * 192 / 1e6
    assert abs(result["weights_mb"] - tiny_mb) < 1e-6  # 6 blocks (4 trunk + 2 NAR head blocks) and the heads
    for row in result["rows"]:
        assert min(row["streamed_ms"], row["cached_ms"], row["prepacked_ms"]) > 0
        # the derived columns come from the 1-row pass (all reading) and this row's cached time
        read_ms = result["rows"][0]["streamed_ms"]
        assert row["read_plus_cached_ms"] == pytest.approx(read_ms + row["cached_ms"])
        assert row["max_read_cached_ms"] == pytest.approx(max(read_ms, row["cached_ms"]))
    assert (tmp_path / "weight_streaming.md").read_text().startswith("# Weight streaming vs arithmetic: tiny")
