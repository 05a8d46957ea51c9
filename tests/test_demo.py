"""`navid demo --quick` end to end: every stage runs, leaves usable outputs, and a second run gives the same numbers."""

from __future__ import annotations

import json

import pytest
import torch

from navid.cli import main

# Report entries that measure this machine: times, speeds, memory, load.
MACHINE_KEYS = {"stage_seconds", "total_seconds", "seconds", "seconds_all", "videos_per_s", "forward_share",
                "peak_mem_mb", "gflops_per_s", "tokens_per_s", "ratios", "machine", "peak_gflops", "floor_seconds",
                "limit_seconds", "bound", "efficiency", "compile_seconds"}


def _numbers(report, out):
    """The report without the entries that measure the machine, with its output folder named OUT."""
    if isinstance(report, dict):
        return {k: _numbers(v, out) for k, v in report.items() if k not in MACHINE_KEYS}
    if isinstance(report, list):
        return [_numbers(v, out) for v in report]
    return report.replace(str(out), "OUT") if isinstance(report, str) else report


@pytest.mark.slow
def test_quick_demo_writes_report_samples_and_usable_checkpoints(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("  estimate: ") == 2  # one per training stage, before most of its steps
    assert "I3D features of 12 real clips took" in printed

    report = json.loads((out / "report.json").read_text())
    assert report["plan"] == "quick"
    quality = report["quality"]
    assert quality["nar"]["fvd"] > 0 and quality["random_token_baseline"]["fvd"] > 0
    # Reconstructions of real clips are the tokenizer's ceiling: far closer to real clips than random tokens.
    assert quality["tokenizer_reconstructions"]["fvd"] < quality["random_token_baseline"]["fvd"]
    assert 0 <= quality["tokenizer_reconstructions"]["own_class_nearest"] <= 1
    verdict = quality["nar"]["per_class_verdict"]
    assert verdict["share"] == quality["nar"]["per_class_fvd"]["own_class_nearest"]
    assert verdict["passed"] == (verdict["share"] > 0.5) and 0 <= verdict["confidence"] <= 1
    assert verdict["draws"] == report["settings"]["bootstrap_draws"]
    assert "bootstrap draws" in (out / "report.md").read_text()
    steps = {(r["grid"], r["schedule"]): r["steps"] for r in report["throughput"]["rows"]}
    assert steps == {("4x8x8", "nar"): 18, ("4x8x8", "par4"): 67, ("4x8x8", "raster"): 256}
    assert "## Quality" in (out / "report.md").read_text()
    assert len(list((out / "samples" / "grids").glob("*.gif"))) == report["settings"]["classes"]

    # The kept checkpoints are what `navid sample` takes.
    assert main([
        "sample", "--generator", str(out / "checkpoints" / "generator.ckpt"),
        "--tokenizer", str(out / "checkpoints" / "tokenizer.ckpt"),
        "--classes", "0", "--per-class", "1", "--out", str(tmp_path / "again"),
    ]) == 0
    tokens = torch.load(tmp_path / "again" / "tokens.pt", weights_only=True)["tokens"]
    assert tokens.shape == (1, 4, 8, 8)

    # A second run into the same folder is refused without --overwrite, and nothing is lost.
    before = (out / "report.json").read_bytes()
    assert main(["demo", "--quick", "--out", str(out)]) == 2
    assert (out / "report.json").read_bytes() == before

    # Fixed step counts and fixed seeds: a second run gives the same checkpoints and the same report numbers.
    # "Same" is bit-exact here: the same machine, thread count and software run the same float operations in
    # the same order. Another machine (other CPU kernels, other thread counts) agrees only up to float rounding.
    # The second run goes into the same folder with --overwrite, which first removes the earlier run's outputs
    # (a stale class grid must not stay beside the new ones) and keeps files that are not the demo's.
    weights = {"tokenizer.ckpt": lambda c: c["navid_tokenizer"]["state_dict"],
               "generator.ckpt": lambda c: c["state_dict"]}
    first_states = {name: state_of(torch.load(out / "checkpoints" / name, weights_only=True))
                    for name, state_of in weights.items()}
    (out / "samples" / "grids" / "999_Stale.gif").write_bytes(b"an earlier run's grid")
    (out / "notes.txt").write_text("mine")
    assert main(["demo", "--quick", "--out", str(out), "--overwrite"]) == 0
    second = json.loads((out / "report.json").read_text())
    assert _numbers(second, out) == _numbers(report, out)
    assert not (out / "samples" / "grids" / "999_Stale.gif").exists() and (out / "notes.txt").read_text() == "mine"
    for name, state_of in weights.items():
        second_state = state_of(torch.load(out / "checkpoints" / name, weights_only=True))
        assert first_states[name].keys() == second_state.keys()
        assert all(torch.equal(first_states[name][k], second_state[k]) for k in second_state), name
