"""`python -m video_analysis.serve`: what `make run` starts."""
import sys

from video_analysis.serve.launcher import main

sys.exit(main())
