"""benchmarks/gpu_check.py cannot rot: its CPU dry run executes every part with tiny sizes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_dry_run_runs_every_part(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--dry-run", "--out", str(tmp_path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    parts = report["parts"]
    assert report["dry_run"] and not [name for name, part in parts.items() if "error" in part]
    collected = re.search(r"(\d+) tests? collected", parts["cuda tests"]["result"]["summary"])
    assert collected and int(collected.group(1)) >= 6  # tests/test_cuda.py, none dropped by an import error
    assert [r["trunk"] for r in parts["generator training (bf16-mixed, NAR)"]["result"]] == ["tiny"]
    assert parts["generator training (bf16-mixed, NAR)"]["result"][0]["precision"] == "bf16-mixed"
    compiled = parts["decoding tiny, batch 1"]["result"]
    assert sorted(r["schedule"] for r in compiled) == ["nar", "par4", "raster"]
    assert all(r["compiled_videos_per_s"] > 0 and r["compile_s"] > 0 for r in compiled)
    assert [r["compiled_videos_per_s"] for r in parts["decoding eager, batch 2"]["result"]] == [None] * 2
    rows = json.loads((tmp_path / "throughput.json").read_text())["rows"]
    expected = [(1, "nar"), (1, "par4"), (1, "raster"), (2, "nar"), (2, "par4")]
    assert sorted((r["batch"], r["schedule"]) for r in rows) == expected
    table = (tmp_path / "throughput.md").read_text()  # raster was not run at batch 2: its columns say "-"
    assert "| 2 | " in table and "nan" not in table
    kept, fresh = parts["compiled sampling over batches"]["result"]
    assert (kept["cache"], fresh["cache"]) == ("kept", "fresh per call") and kept["calls"] == fresh["calls"] == 2
    assert kept["first_warmup_s"] > 0 and kept["sampling_s_median"] > 0
    assert parts["tokenizer encode"]["result"]["clips_per_s"] > 0 and parts["I3D"]["result"]["clips_per_s"] > 0
    assert (tmp_path / "gpu_check.md").read_text().startswith("# GPU acceptance check")
