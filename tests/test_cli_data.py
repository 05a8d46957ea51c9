"""``navid data synth`` and ``navid data info`` through the real command-line entry point."""

from __future__ import annotations

import json

from navid.cli import main


def test_synth_then_info(tmp_path, capsys):
    out = tmp_path / "ds"
    assert main(["data", "synth", "--out", str(out), "--classes", "3", "--videos-per-class", "4",
                 "--frames", "6", "--size", "32", "--seed", "1"]) == 0
    assert "3 classes" in capsys.readouterr().out
    (out / "DiskSlide" / "v_DiskSlide_g03_c01.avi").write_bytes(b"junk")
    report = tmp_path / "info.json"
    assert main(["data", "info", "--root", str(out), "--json", str(report), "--cache-dir", str(tmp_path / "c")]) == 0
    text = capsys.readouterr().out
    assert "unreadable files: 1" in text and "v_DiskSlide_g03_c01.avi" in text
    info = json.loads(report.read_text())
    assert info["classes"] == ["DiskSlide", "SquareSpin", "TriangleBounce"]
    assert info["splits"]["train"]["clips"] == 9 and info["splits"]["test"]["clips"] == 3
    assert info["splits"]["test"]["frames"] == {"min": 6, "median": 6.0, "mean": 6.0, "max": 6}
    # an existing report is kept unless --overwrite
    info_args = ["data", "info", "--root", str(out), "--json", str(report), "--cache-dir", str(tmp_path / "c")]
    report.write_text("{}")
    assert main(info_args) == 2 and report.read_text() == "{}"
    assert "--json" in capsys.readouterr().err and main([*info_args, "--overwrite"]) == 0
    assert json.loads(report.read_text())["num_classes"] == 3


def test_user_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "info", "--root", str(tmp_path / "nope")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert main(["data", "synth", "--out", str(tmp_path / "full")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_ctrl_c_is_one_line_and_a_failing_status(tmp_path):
    # Before: a KeyboardInterrupt traceback (in every command but the training ones, where Lightning catches it).
    import os
    import signal
    import subprocess
    import sys
    import time

    command = [sys.executable, "-m", "navid.cli", "data", "synth", "--out", str(tmp_path / "ds"), "--classes", "10",
               "--videos-per-class", "60"]
    # SIGINT as a terminal delivers it, also where this test runs as a background job (which ignores SIGINT)
    run = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 60
    while not any((tmp_path / "ds").rglob("*.avi")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    err = run.communicate(timeout=60)[1]
    assert run.returncode == 130, err
    assert "navid data: interrupted (Ctrl-C)" in err and "Traceback" not in err, err
