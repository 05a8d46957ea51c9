"""The ways a training run stops before its step count that a command reports as one line and an exit status.

Kept free of torch and Lightning so that ``navid.cli`` can catch them without importing either.
"""

from __future__ import annotations


class RunStopped(Exception):
    """A training run stopped early; the message says where and what ``--resume`` continues from."""

    exit_status = 1


class NonFiniteLossError(RunStopped, FloatingPointError):
    """Training produced a NaN or Inf loss."""


class StoppedBySigterm(RunStopped):
    """The process was sent SIGTERM (a scheduler's cancel or pre-emption, ``kill``, a container stop).

    Exit status 143 = 128 + SIGTERM, what a shell reports for a process SIGTERM ended, so a job script or scheduler
    does not take the stopped run for a finished one.
    """

    exit_status = 143
