"""Configuration: one class, read from the environment (see guides/operations.md)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import List, Mapping, Optional

# The model `make run` serves when MODEL is not set (model_runner and the CLI use it too).
DEFAULT_MODEL = "mlx-community/SmolVLM2-500M-Video-Instruct-mlx"


def env_int(name: str, default: Optional[int], minimum: int = 0,
            environ: Optional[Mapping[str, str]] = None) -> Optional[int]:
    """A whole number from the environment (or `environ`); a person-readable exit when it is not one."""
    raw = (os.environ if environ is None else environ).get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"{name} must be at least {minimum}, got {value}")
    return value


def _env_list(name: str, default: str) -> List[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


@dataclass(frozen=True)
class Config:
    MODEL: str = DEFAULT_MODEL
    DATA_DIR: str = "data"
    MAX_UPLOAD_MB: int = 2048
    MAX_QUEUED_JOBS: int = 16
    JOB_WORKERS: int = 2
    SESSION_TTL_SECONDS: int = 86400
    # The most DATA_DIR may hold for sessions and uploads being received, in MB (storage.py). None: half the
    # free space of DATA_DIR's disk when the service starts; 0: no bound but the disk's own.
    MAX_STORAGE_MB: Optional[int] = None
    CORS_ORIGINS: List[str] = field(default_factory=lambda: ["*"])
    HOST: str = "127.0.0.1"
    PORT: int = 5000
    # How often the sweeper looks for expired sessions.
    SWEEP_INTERVAL_SECONDS: float = 60.0
    # Form limits handed to werkzeug: a few fields and one file are all an upload needs.
    MAX_FORM_PARTS: int = 64
    MAX_FORM_MEMORY_SIZE: int = 256 * 1024
    # Seconds a legacy /analyze request waits before giving up on its job.
    LEGACY_TIMEOUT_SECONDS: Optional[float] = None
    # Set by serve.py: nginx in front has buffered every body whole, so a refused request's unread body is
    # read to its end before the answer (gunicorn would close the connection mid-body: nginx then says 502).
    BUFFERED_BY_PROXY: bool = False
    # Request threads of the server (gunicorn.conf.py reads the same variable).
    HTTP_THREADS: int = 16
    # Legacy /analyze requests served at once: each holds a request thread until its job ends, so
    # they may take at most half the threads; beyond that they get 503 + Retry-After.
    MAX_LEGACY_REQUESTS: Optional[int] = None

    def __post_init__(self) -> None:
        if self.MAX_LEGACY_REQUESTS is None:
            object.__setattr__(self, "MAX_LEGACY_REQUESTS", max(1, self.HTTP_THREADS // 2))
        if not 1 <= self.MAX_LEGACY_REQUESTS < self.HTTP_THREADS:
            raise SystemExit(f"MAX_LEGACY_REQUESTS must be at least 1 and below HTTP_THREADS ({self.HTTP_THREADS}), "
                             f"so that waiting legacy requests always leave threads for the others; "
                             f"got {self.MAX_LEGACY_REQUESTS}")

    @classmethod
    def from_env(cls, **overrides) -> "Config":
        """Settings from the environment, then `overrides` (tests use these)."""
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        defaults = cls()
        settings = dict(
            MODEL=os.environ.get("MODEL") or defaults.MODEL,
            DATA_DIR=os.environ.get("DATA_DIR") or defaults.DATA_DIR,
            MAX_UPLOAD_MB=env_int("MAX_UPLOAD_MB", defaults.MAX_UPLOAD_MB, 1),
            MAX_QUEUED_JOBS=env_int("MAX_QUEUED_JOBS", defaults.MAX_QUEUED_JOBS, 1),
            JOB_WORKERS=env_int("JOB_WORKERS", defaults.JOB_WORKERS, 1),
            SESSION_TTL_SECONDS=env_int("SESSION_TTL_SECONDS", defaults.SESSION_TTL_SECONDS, 1),
            MAX_STORAGE_MB=env_int("MAX_STORAGE_MB", defaults.MAX_STORAGE_MB, 0),
            CORS_ORIGINS=_env_list("CORS_ORIGINS", "*"),
            HOST=os.environ.get("HOST") or defaults.HOST,
            PORT=env_int("PORT", defaults.PORT, 1),
            HTTP_THREADS=env_int("HTTP_THREADS", defaults.HTTP_THREADS, 2),
            BUFFERED_BY_PROXY=os.environ.get("BUFFERED_BY_PROXY", "") == "1",
            MAX_LEGACY_REQUESTS=env_int("MAX_LEGACY_REQUESTS", 0, 0) or None,  # None: half of HTTP_THREADS
        )
        settings.update(overrides)
        return cls(**settings)
