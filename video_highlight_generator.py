"""The analysis engine's entry point: `VideoHighlightGenerator` for Python callers, and the command line.

    python video_highlight_generator.py VIDEO [--workout] [--model DIR] [--json OUT]

The engine is `video_analysis.engine`, the command line `video_analysis.cli`.
"""
import sys

from video_analysis.cancellation import Cancelled
from video_analysis.engine.analyzer import VideoHighlightGenerator
from video_analysis.engine.parameters import DEFAULT_MAX_TOKENS
from video_analysis.model.errors import ModelLoadError
from video_analysis.video import VideoError

# What this module has always offered its Python callers.
__all__ = ["VideoHighlightGenerator", "Cancelled", "VideoError", "ModelLoadError", "DEFAULT_MAX_TOKENS"]

if __name__ == "__main__":
    from video_analysis.cli import main

    sys.exit(main())
