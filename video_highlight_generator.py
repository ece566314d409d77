"""The analysis engine's entry point: `VideoHighlightGenerator` for Python callers, and the command line.

    python video_highlight_generator.py VIDEO [--workout] [--model DIR] [--json OUT]

The engine is `video_analysis.engine`, the command line `video_analysis.cli`.
"""
import sys

from video_analysis.engine.analyzer import VideoHighlightGenerator

__all__ = ["VideoHighlightGenerator"]

if __name__ == "__main__":
    from video_analysis.cli import main

    sys.exit(main())
