"""Which torch device a model runs on: fusion's decisions (`reason.device`) and the detector's
training (`train-detector --device`)."""

from __future__ import annotations

import torch

from cartstream.exceptions import ConfigurationError


def pick_device(name: str, setting: str) -> torch.device:
    """`auto` is CUDA where torch sees a device, else the CPU; `cuda` without one is an error
    that names the `setting` that asked for it."""
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    if name == "cuda":
        raise ConfigurationError(f"{setting}=cuda but torch sees no CUDA device")
    return torch.device("cpu")
