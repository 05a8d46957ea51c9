"""Shared pytest fixtures: paths to the committed fixtures and small synthesised datasets."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory) -> Path:
    """A tiny synthesised UCF-101-layout dataset (4 classes x 4 videos, 20 frames, 64x64), shared read-only.

    Fold 1 puts group 1 (one video per class) in the test split and the other 3 in train.
    """
    from navid.data.synthetic import synthesize_dataset

    return synthesize_dataset(
        tmp_path_factory.mktemp("synth") / "ucf", classes=4, videos_per_class=4, frames=20, size=64, seed=0,
        progress=False,
    )


def _runs_cuda_tests(config) -> bool:
    return "cuda" in (config.option.markexpr or "")


def pytest_report_header(config):
    if not _runs_cuda_tests(config):
        return "tests marked cuda are deselected; run them on a GPU with -m cuda (benchmarks/gpu_check.py does)"


def pytest_collection_modifyitems(config, items):
    """Deselect (never skip) the ``cuda`` tests unless the ``-m`` expression names the marker."""
    if _runs_cuda_tests(config):
        return
    cuda = [item for item in items if item.get_closest_marker("cuda")]
    if cuda:
        config.hook.pytest_deselected(items=cuda)
        items[:] = [item for item in items if not item.get_closest_marker("cuda")]
