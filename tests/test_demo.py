"""`navid demo --quick` end to end: every stage runs and leaves usable outputs."""

from __future__ import annotations

import json

import pytest
import torch

from navid.cli import main


@pytest.mark.slow
def test_quick_demo_writes_report_samples_and_usable_checkpoints(tmp_path):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0

    report = json.loads((out / "report.json").read_text())
    assert report["plan"] == "quick"
    quality = report["quality"]
    assert quality["nar"]["fvd"] > 0 and quality["random_token_baseline"]["fvd"] > 0
    # Reconstructions of real clips are the tokenizer's ceiling: far closer to real clips than random tokens.
    assert quality["tokenizer_reconstructions"]["fvd"] < quality["random_token_baseline"]["fvd"]
    assert 0 <= quality["tokenizer_reconstructions"]["own_class_nearest"] <= 1
    steps = {(r["grid"], r["schedule"]): r["steps"] for r in report["throughput"]["rows"]}
    assert steps == {("4x8x8", "nar"): 18, ("4x8x8", "par4"): 67, ("4x8x8", "raster"): 256}
    assert "## Quality" in (out / "report.md").read_text()
    assert len(list((out / "samples" / "grids").glob("*.gif"))) == report["settings"]["classes"]

    # The kept checkpoints are what `navid sample` takes.
    assert main([
        "sample", "--generator", str(out / "checkpoints" / "generator.ckpt"), "--tokenizer", str(out / "checkpoints" / "tokenizer.ckpt"),
        "--classes", "0", "--per-class", "1", "--out", str(tmp_path / "again"),
    ]) == 0
    tokens = torch.load(tmp_path / "again" / "tokens.pt", weights_only=True)["tokens"]
    assert tokens.shape == (1, 4, 8, 8)

    # A second run into the same folder is refused without --overwrite, and nothing is lost.
    before = (out / "report.json").read_bytes()
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    assert (out / "report.json").read_bytes() == before
