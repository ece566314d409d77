"""How the model is named and what can go wrong with it, without loading mlx.

The web process imports these (for /health and its answers) and never needs
mlx or OpenBLAS: the model itself lives in the analysis child process.
"""
from __future__ import annotations

import os


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message names it and says why."""


class HubUnreachable(ModelLoadError):
    """The model is not on this machine and the Hugging Face Hub could not be reached: worth trying again later."""


class RunnerClosed(RuntimeError):
    """The model thread has stopped; no more requests are taken."""


def model_display_name(model: str) -> str:
    """A local directory is named by its base name, never by its full path (errors and /health show it)."""
    if os.path.isdir(model) or os.path.isabs(model) or model.startswith("."):
        return os.path.basename(os.path.normpath(model)) or model
    return model
