"""A description of the machine a benchmark ran on, recorded next to every result."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Optional

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_description(device: Optional[torch.device] = None) -> dict:
    """CPU model, core count, torch version, intra-op threads, load average (and the GPU, if used).

    The load average matters on shared machines: a benchmark run while other work competes
    for the cores reports lower throughput, and readers should be able to tell.
    """
    device = device or torch.device("cpu")
    info = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info
