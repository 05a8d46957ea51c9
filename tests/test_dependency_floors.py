"""The version floors in setup.cfg cover every library API navid needs, and those APIs exist.

Each entry names an API the code calls and the release that introduced it (from the libraries'
changelogs). The test fails when an installed version lacks one of them (an import breaks) or
when setup.cfg declares a floor older than an API it needs.
"""

from __future__ import annotations

import configparser
import inspect
from pathlib import Path

import lightning
import pytest
import torch
import torch.distributed.fsdp
import torch.nn.functional as F
from packaging.requirements import Requirement
from packaging.version import Version

SETUP_CFG = Path(__file__).resolve().parent.parent / "setup.cfg"


def _logger_connector_predicate() -> bool:
    from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector

    return isinstance(inspect.getattr_static(_LoggerConnector, "should_update_logs"), property)


# (package, release that introduced the API, what uses it, check that it is there)
NEEDED_APIS = [
    ("torch", "2.4", "F.rms_norm (transformer RMSNorm)", lambda: callable(F.rms_norm)),
    ("torch", "2.6", "torch.distributed.fsdp.fully_shard, public FSDP2 (trainer.strategy=fsdp)",
     lambda: all(hasattr(torch.distributed.fsdp, name)
                 for name in ("fully_shard", "FSDPModule", "register_fsdp_forward_method"))),
    ("torch", "2.9", "torch.backends.cudnn.conv.fp32_precision (FVD features in true fp32, navid.metrics.fvd)",
     lambda: hasattr(torch.backends.cudnn, "conv") and hasattr(torch.backends.cudnn.conv, "fp32_precision")),
    ("torch", "2.0", "F.scaled_dot_product_attention (attention)", lambda: callable(F.scaled_dot_product_attention)),
    ("torch", "2.0", "torch.compile (sampler --compile)", lambda: callable(torch.compile)),
    ("torch", "1.13", "torch.load(weights_only=) (every checkpoint load)",
     lambda: "weights_only" in inspect.signature(torch.load).parameters),
    ("lightning", "2.6", "Trainer.fit(weights_only=) (resuming generator runs)",
     lambda: "weights_only" in inspect.signature(lightning.Trainer.fit).parameters),
    ("lightning", "2.0", "_LoggerConnector.should_update_logs (navid.utils.training.is_logging_step)",
     _logger_connector_predicate),
]


def declared_floors() -> dict[str, Version]:
    parser = configparser.ConfigParser()
    parser.read(SETUP_CFG)
    floors = {}
    for line in parser["options"]["install_requires"].strip().splitlines():
        requirement = Requirement(line.strip())
        minimum = [Version(s.version) for s in requirement.specifier if s.operator == ">="]
        if minimum:
            floors[requirement.name] = minimum[0]
    return floors


@pytest.mark.parametrize("package, introduced, what, present", NEEDED_APIS,
                         ids=[api[2].split(" ")[0] for api in NEEDED_APIS])
def test_needed_api_exists_and_the_declared_floor_has_it(package, introduced, what, present):
    assert present(), f"{what} is missing from the installed {package}"
    floor = declared_floors()[package]
    assert floor >= Version(introduced), (f"setup.cfg declares {package}>={floor}, "
                                          f"but {what} needs {package}>={introduced}")


def test_declared_floors_are_exactly_the_newest_needed_api():
    # A floor above every needed API would turn away users for no reason.
    floors = declared_floors()
    for package in {api[0] for api in NEEDED_APIS}:
        newest = max(Version(api[1]) for api in NEEDED_APIS if api[0] == package)
        assert floors[package] == newest, f"setup.cfg: {package}>={floors[package]}, newest needed API: {newest}"
