"""The HTTP service's entry point: gunicorn serves `app:create_app()`; `python app.py` runs a development server.

The service itself is `video_analysis.web` (guides/architecture.md).
"""
from video_analysis.web.app import create_app, main

__all__ = ["create_app"]

if __name__ == "__main__":
    main()
