"""tools/slurm/*.sbatch: run each template under stand-ins for srun and scontrol (no training, no SLURM)
and check every command it would launch against torchrun's and navid's own argument parsers and
navid's config schemas, so the templates cannot drift from the CLI; check the resume-on-requeue logic."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from torch.distributed.run import get_args_parser as torchrun_parser

from navid.cli import build_parser
from navid.config import load_config
from navid.generation.config import GeneratorTrainConfig
from navid.tokenizer.config import TokenizerTrainConfig

REPO = Path(__file__).resolve().parents[1]
TEMPLATES = sorted((REPO / "tools" / "slurm").glob("*.sbatch"))
SCHEMAS = {"train": GeneratorTrainConfig, "train-tokenizer": TokenizerTrainConfig}
JOB = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NODELIST": "gpu-[01-04]",
    "SLURM_NNODES": "4",
    "SLURM_GPUS_ON_NODE": "8",
    "SLURM_CPUS_PER_TASK": "64",
}
HOSTS = ["gpu-01", "gpu-02", "gpu-03", "gpu-04"]
WAIT_S = 60  # generous: only bounds a hang, the test never measures time

# One stand-in for both programs: it records its argv as a JSON line in $STUB_LOG; `scontrol show
# hostnames` prints the hosts; with $STUB_RELEASE set, srun then waits until that file exists.
STUB = f"""#!{sys.executable}
import json, os, sys, time
name = os.path.basename(sys.argv[0])
with open(os.environ["STUB_LOG"], "a") as log:
    log.write(json.dumps([name] + sys.argv[1:]) + "\\n")
if name == "scontrol" and sys.argv[1:3] == ["show", "hostnames"]:
    print("\\n".join({HOSTS!r}))
release = os.environ.get("STUB_RELEASE")
while name == "srun" and release and not os.path.exists(release):
    time.sleep(0.05)
"""


@pytest.fixture()
def job(tmp_path):
    """(environment, calls) for running a template in ``tmp_path`` with the stand-ins first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("srun", "scontrol"):
        (bin_dir / name).write_text(STUB)
        (bin_dir / name).chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = {
        **os.environ,
        **JOB,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "SLURM_SUBMIT_DIR": str(REPO),
        "STUB_LOG": str(log),
    }
    for key in ("MASTER_ADDR", "MASTER_PORT", "GPUS_PER_NODE", "OMP_NUM_THREADS", "SLURM_RESTART_COUNT", "NAVID_VENV"):
        env.pop(key, None)

    def calls(program: str) -> list[list[str]]:
        lines = log.read_text().splitlines() if log.exists() else []
        return [c[1:] for c in map(json.loads, lines) if c[0] == program]

    return env, calls


def run_template(template: Path, env: dict, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(template), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=WAIT_S
    )


def navid_command(srun_argv: list[str]) -> tuple[object, object]:
    """(torchrun's parsed arguments, navid's parsed arguments) of one srun call, both by the real parsers."""
    torchrun = srun_argv.index("torchrun")
    assert "--ntasks-per-node=1" in srun_argv[:torchrun]  # one torchrun per node
    launch = torchrun_parser().parse_args(srun_argv[torchrun + 1 :])
    assert launch.module and launch.training_script == "navid.cli"
    return launch, build_parser().parse_args(launch.training_script_args)


def test_templates_exist():
    assert [t.name for t in TEMPLATES] == ["evaluate.sbatch", "train_generator.sbatch", "train_tokenizer.sbatch"]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_template_commands_parse(template, job, tmp_path):
    env, calls = job
    result = run_template(template, env, tmp_path)
    assert result.returncode == 0, result.stderr
    (srun,) = calls("srun")
    launch, args = navid_command(srun)
    assert (launch.nnodes, launch.nproc_per_node, launch.rdzv_backend, launch.rdzv_id) == ("4", "8", "c10d", "4242")
    host, port = launch.rdzv_endpoint.split(":")
    assert host == HOSTS[0] and 20000 <= int(port) < 40000
    assert "rendezvous gpu-01:" in result.stdout
    if args.command in SCHEMAS:
        # the overrides are valid keys and types of the schema, with the allocation's size
        cfg = load_config(SCHEMAS[args.command], REPO / args.config, args.overrides)
        assert (cfg.trainer.num_nodes, cfg.trainer.devices) == (4, 8)
        assert not args.resume and not args.overwrite  # a first start never writes over a run
    else:
        assert args.command == "evaluate"
        assert (args.num, args.cfg, args.split) == (10000, 1.25, "train")  # the papers' protocol, as in the README


def test_generator_template_passes_the_fsdp_strategy_through(job, tmp_path):
    env, calls = job
    template = REPO / "tools" / "slurm" / "train_generator.sbatch"
    result = run_template(template, env, tmp_path, "trainer.strategy=fsdp")
    assert result.returncode == 0, result.stderr
    (srun,) = calls("srun")
    _, args = navid_command(srun)
    cfg = load_config(SCHEMAS[args.command], REPO / args.config, args.overrides)
    assert (cfg.trainer.strategy, cfg.trainer.num_nodes, cfg.trainer.devices) == ("fsdp", 4, 8)


@pytest.mark.parametrize("template", [t for t in TEMPLATES if t.stem.startswith("train")], ids=lambda p: p.stem)
def test_restart_resumes_from_last_checkpoint(template, job, tmp_path):
    env, calls = job
    out = tmp_path / "run"
    env = {**env, "OUT_DIR": str(out), "SLURM_RESTART_COUNT": "1"}
    assert run_template(template, env, tmp_path).returncode == 0
    (out / "checkpoints").mkdir(parents=True)
    (out / "checkpoints" / "last.ckpt").write_bytes(b"")
    (out / "STOP").touch()  # left by the stopped start: the restarted run must not stop at once
    assert run_template(template, env, tmp_path, "trainer.max_steps=7").returncode == 0
    assert not (out / "STOP").exists()
    before, after = (navid_command(c)[1] for c in calls("srun"))
    assert before.overwrite and not before.resume  # requeued before its first checkpoint: start over
    assert after.resume and not after.overwrite and after.config  # a checkpoint exists: continue from it
    assert after.overrides[-1] == "trainer.max_steps=7" and f"out_dir={out}" in after.overrides


def test_evaluation_already_finished_exits_at_once(job, tmp_path):
    env, calls = job
    (tmp_path / "done.json").write_text("{}")
    result = run_template(REPO / "tools/slurm/evaluate.sbatch", {**env, "JSON": "done.json"}, tmp_path)
    assert result.returncode == 0 and "has finished" in result.stdout
    assert calls("srun") == []


def _usr1_during_the_step(template: str, env: dict, cwd: Path, calls, while_running) -> tuple[int, str, str]:
    """Runs a template, sends it SIGUSR1 once its step runs, calls ``while_running()`` before the step ends,
    then ends the step; returns (exit status, stdout, stderr)."""
    release = cwd / "release"
    proc = subprocess.Popen(["bash", str(REPO / "tools/slurm" / template)], env={**env, "STUB_RELEASE": str(release)},
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(lambda: calls("srun"))  # the step runs and the trap is installed
        proc.send_signal(signal.SIGUSR1)
        while_running()
        assert proc.poll() is None  # the job waits for its step, as SLURM expects
        release.touch()
        stdout, stderr = proc.communicate(timeout=WAIT_S)
    finally:
        release.touch()
        proc.kill()
    return proc.returncode, stdout, stderr


def test_usr1_asks_a_training_run_to_stop_then_requeues_once_it_has(job, tmp_path):
    env, calls = job
    out = tmp_path / "run"
    out.mkdir()  # the running navid train made it

    def while_running():
        _wait_for(lambda: (out / "STOP").exists())  # navid stops at its next logging step and writes last.ckpt
        time.sleep(0.5)
        assert ["requeue", "4242"] not in calls("scontrol")  # not while the run saves

    status, stdout, stderr = _usr1_during_the_step("train_generator.sbatch", {**env, "OUT_DIR": str(out)}, tmp_path,
                                                   calls, while_running)
    assert status == 0, stderr
    assert calls("scontrol").count(["requeue", "4242"]) == 1
    assert "the run stopped; requeueing job 4242" in stdout


@pytest.mark.parametrize("template, extra", [
    ("evaluate.sbatch", {}),  # not a training run: at once
    ("train_generator.sbatch", {"STOP_GRACE_S": "1"}),  # a training run that has not stopped in time
])
def test_usr1_requeues_while_the_step_still_runs(job, tmp_path, template, extra):
    env, calls = job
    (tmp_path / "run").mkdir()
    env = {**env, "OUT_DIR": str(tmp_path / "run"), **extra}
    status, stdout, stderr = _usr1_during_the_step(template, env, tmp_path, calls,
                                                   lambda: _wait_for(lambda: ["requeue", "4242"] in calls("scontrol")))
    assert status == 0, stderr
    assert "requeueing job 4242" in stdout


def _wait_for(condition) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, "the template did not get there"
        time.sleep(0.05)


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.stem)
def test_help_says_when_to_use(template, tmp_path):
    result = subprocess.run(["bash", str(template), "--help"], cwd=REPO, capture_output=True, text=True, timeout=WAIT_S)
    assert result.returncode == 0
    assert "When to use:" in result.stdout and "sbatch" in result.stdout and "#SBATCH" not in result.stdout
