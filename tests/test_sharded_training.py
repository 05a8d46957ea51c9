"""benchmarks/sharded_training.py launches both strategies under torchrun and reports each rank's memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_sharded_training_reports_ddp_and_fsdp_memory_per_rank(tmp_path):
    done = subprocess.run([sys.executable, "benchmarks/sharded_training.py", "--trunk", "tiny", "--steps", "2",
                           "--out", str(tmp_path)], cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((tmp_path / "sharded_training.json").read_text())
    ddp, fsdp = result["rows"]
    assert (ddp["strategy"], fsdp["strategy"]) == ("ddp", "fsdp")
    assert ddp["most_weights_on_a_rank"] == ddp["weights"] == fsdp["weights"]
    assert fsdp["weights"] / 2 <= fsdp["most_weights_on_a_rank"] < fsdp["weights"] / 2 + 1000  # odd rows: rank 0
    assert fsdp["model_states_mb_per_rank"] == pytest.approx(ddp["model_states_mb_per_rank"] / 2, rel=1e-3)
    for row in (ddp, fsdp):
        for key in ("rss_after_first_step_mb_per_rank", "peak_rss_later_steps_mb_per_rank"):
            assert len(row[key]) == 2 and min(row[key]) > 0
        assert row["steps_per_s"] > 0
    assert "| fsdp |" in (tmp_path / "sharded_training.md").read_text()
