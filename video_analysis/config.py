"""Configuration: every environment variable the product reads, in one class (see guides/operations.md).

`Config.from_env()` reads them with pydantic-settings; an invalid value
stops the start with a sentence naming the variable. Other modules take
their values from a Config (or are handed them): none reads os.environ.
Cheap to import: no mlx, no flask.
"""
from __future__ import annotations

import os
import socket
from typing import Annotated, Any, List, Literal, Optional

from pydantic import BeforeValidator, Field, ValidationError, ValidationInfo, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

# The state database's file name in DATA_DIR when STATE_DB is not set.
STATE_DB_NAME = "state.db"

# The model `make run` serves when MODEL is not set (the model runner and the CLI use it too).
DEFAULT_MODEL = "mlx-community/SmolVLM2-500M-Video-Instruct-mlx"


def _whole_number(value: Any, info: ValidationInfo) -> Any:
    # int() as before: " 12 " is 12, "1.5" and "lots" are refused with the variable's name.
    if isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{info.field_name} must be a whole number, got {value!r}") from None
    return value


def _switch(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str):
        if value.strip() in ("0", "1"):
            return value.strip() == "1"
        raise ValueError(f"{info.field_name} must be 1 (on) or 0 (off), got {value!r}")
    return value


def _comma_list(value: Any) -> Any:
    return [item.strip() for item in value.split(",") if item.strip()] if isinstance(value, str) else value


WholeNumber = Annotated[int, BeforeValidator(_whole_number)]
Switch = Annotated[bool, BeforeValidator(_switch)]
LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class Config(BaseSettings):
    # Names exactly as written (MODEL, not model); unknown overrides are refused; a Config never changes.
    model_config = SettingsConfigDict(case_sensitive=True, extra="forbid", frozen=True)

    # -- the service ---------------------------------------------------------------------------
    MODEL: str = DEFAULT_MODEL
    # The first pause before loading MODEL again when the Hugging Face Hub could not be reached; it doubles
    # after each failed try, up to 300 s (or this, if longer).
    MODEL_RETRY_SECONDS: float = Field(15.0, gt=0)
    DATA_DIR: str = "data"
    # The SQLite file sessions are written through to (jobs/state_db.py); None: DATA_DIR/state.db;
    # ":memory:" keeps nothing on disk (a restart forgets every session, as before issue 16).
    STATE_DB: Optional[str] = None
    MAX_UPLOAD_MB: WholeNumber = Field(2048, ge=1)
    MAX_QUEUED_JOBS: WholeNumber = Field(16, ge=1)
    JOB_WORKERS: WholeNumber = Field(2, ge=1)
    SESSION_TTL_SECONDS: WholeNumber = Field(86400, ge=1)
    # The most DATA_DIR may hold for sessions and uploads being received, in MB (storage.py). None: half the
    # free space of DATA_DIR's disk when the service starts; 0: no bound but the disk's own.
    MAX_STORAGE_MB: Optional[WholeNumber] = Field(None, ge=0)
    # The longest reel a job renders, in seconds; a longer one is refused (the job still completes, and says why).
    MAX_REEL_SECONDS: float = Field(600.0, gt=0)
    # Comma-separated in the environment; set but empty means no origin at all.
    CORS_ORIGINS: Annotated[List[str], NoDecode, BeforeValidator(_comma_list)] = ["*"]
    HOST: str = "127.0.0.1"
    PORT: WholeNumber = Field(5000, ge=1)
    # How often the sweeper looks for expired sessions.
    SWEEP_INTERVAL_SECONDS: float = Field(60.0, gt=0)
    # Form limits handed to werkzeug: a few fields and one file are all an upload needs.
    MAX_FORM_PARTS: WholeNumber = Field(64, ge=1)
    MAX_FORM_MEMORY_SIZE: WholeNumber = Field(256 * 1024, ge=1)
    # Set by the launcher (serve/): nginx in front has buffered every body whole, so a refused request's unread body is
    # read to its end before the answer (gunicorn would close the connection mid-body: nginx then says 502).
    BUFFERED_BY_PROXY: Switch = False
    # Request threads of the server (gunicorn.conf.py reads it from here too).
    HTTP_THREADS: WholeNumber = Field(16, ge=2)
    # Legacy /analyze requests served at once: each holds a request thread until its job ends, so
    # they may take at most half the threads by default; beyond that they get 503 + Retry-After.
    MAX_LEGACY_REQUESTS: WholeNumber = Field(default_factory=lambda data: max(1, data.get("HTTP_THREADS", 2) // 2))
    # gunicorn's log level, and the analysis process's.
    LOG_LEVEL: Annotated[LogLevel, BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v)] = "info"

    # -- cluster mode (video_analysis/cluster/, guides/operations.md "Deployment on several machines") -------------
    # Set, the service keeps sessions in this Redis and model workers (`python worker.py`) run the jobs:
    # redis://[:password@]host:port/db, or rediss:// for TLS. Unset: everything runs in this one process tree.
    REDIS_URL: Optional[str] = None
    # The secret model workers show to fetch uploads from an API server; the same on every machine of a cluster.
    WORKER_TOKEN: Optional[str] = None
    # How model workers reach this API server to fetch its uploads; None: http://HOST:PORT (this host's name
    # when HOST listens on every address).
    API_URL: Optional[str] = None
    # Cores the model may use (its matrix multiply's threads, the vision tower's streams). 0: every usable core in
    # the embedded mode; for a model worker, this machine's cores split evenly among the workers running jobs on it.
    MODEL_CORES: WholeNumber = Field(0, ge=0)
    # gunicorn processes `make run` starts in cluster mode (they hold no state); the embedded mode always has one.
    WEB_PROCESSES: WholeNumber = Field(2, ge=1)

    # -- the launcher in front (serve/, `make run`) --------------------------------------------
    # A client must send its whole request head within this (nginx closes the connection after).
    HEADER_TIMEOUT_SECONDS: WholeNumber = Field(10, ge=1)
    # The longest pause between two pieces of a body.
    BODY_TIMEOUT_SECONDS: WholeNumber = Field(60, ge=1)
    # How long nginx waits for the answer to a synchronous /analyze request, which waits for its whole job.
    LEGACY_PROXY_TIMEOUT_SECONDS: WholeNumber = Field(86400, ge=1)
    # The nginx binary; None: `nginx` on PATH, else /usr/sbin/nginx.
    NGINX: Optional[str] = None

    # -- CPU speed-ups, on by default; 0 turns one off to measure it (bench/) -----------------------
    USE_OPENBLAS: Switch = True  # OpenBLAS under mlx's CPU matrix multiply (~30x faster)
    PARALLEL_VISION: Switch = True  # the vision tower split across one CPU stream per core
    FAST_ACTIVATIONS: Switch = True  # the vision tower's softmax and GELU with powers of two
    REUSE_FREED_MEMORY: Switch = True  # glibc keeps large freed blocks for mlx to reuse (no page faults per op)
    PYAV_FRAMES: Switch = True  # frames sampled with PyAV from the keyframe before each (0: OpenCV)
    MODEL_YIELDS_CPU: Switch = True  # the model's computing threads in Linux's SCHED_IDLE class: other processes first

    @model_validator(mode="before")
    @classmethod
    def _empty_means_unset(cls, values: Any) -> Any:
        # `PORT=` in a shell or a compose file means "not set": the default applies. CORS_ORIGINS is the
        # exception: set but empty, it allows no origin, as it always has.
        if isinstance(values, dict):
            return {name: value for name, value in values.items()
                    if not (isinstance(value, str) and value.strip() == "" and name != "CORS_ORIGINS")}
        return values

    @model_validator(mode="after")
    def _legacy_requests_leave_threads(self) -> "Config":
        if not 1 <= self.MAX_LEGACY_REQUESTS < self.HTTP_THREADS:
            raise ValueError(f"MAX_LEGACY_REQUESTS must be at least 1 and below HTTP_THREADS ({self.HTTP_THREADS}), "
                             f"so that waiting legacy requests always leave threads for the others; "
                             f"got {self.MAX_LEGACY_REQUESTS}")
        return self

    @model_validator(mode="after")
    def _cluster_needs_a_token(self) -> "Config":
        if self.REDIS_URL and not self.REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"REDIS_URL must start with redis://, rediss:// or unix://, got {self.REDIS_URL!r}")
        if self.REDIS_URL and len(self.WORKER_TOKEN or "") < 16:
            raise ValueError("REDIS_URL is set (cluster mode), so WORKER_TOKEN must be set too, to a secret of at "
                             "least 16 characters shared by the API servers and the model workers (for example the "
                             "output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)")
        return self

    @property
    def cluster(self) -> bool:
        """Cluster mode: sessions in Redis, jobs on model workers (REDIS_URL is set)."""
        return bool(self.REDIS_URL)

    @property
    def api_url(self) -> str:
        """Where model workers fetch this API server's uploads from."""
        if self.API_URL:
            return self.API_URL.rstrip("/")
        host = socket.gethostname() if self.HOST in ("0.0.0.0", "::", "") else self.HOST
        return f"http://{host}:{self.PORT}"

    @property
    def state_db_path(self) -> str:
        return self.STATE_DB or os.path.join(self.DATA_DIR, STATE_DB_NAME)

    @classmethod
    def from_env(cls, **overrides: Any) -> "Config":
        """Settings from the environment, then `overrides` (tests use these).

        An invalid value raises SystemExit with one sentence per problem, naming the variable.
        """
        unknown = set(overrides) - set(cls.model_fields)
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        try:
            return cls(**overrides)
        except ValidationError as error:
            # A default computed from another variable is not computed once that one is invalid: no news.
            problems = [problem for problem in error.errors() if problem["type"] != "default_factory_not_called"]
            raise SystemExit("\n".join(_sentence(problem) for problem in problems)) from None


def _sentence(problem: dict) -> str:
    """A pydantic error about one variable, as a sentence a person can act on."""
    name = ".".join(str(part) for part in problem["loc"][:1])
    context = problem.get("ctx") or {}
    if problem["type"] == "value_error":  # our own validators already wrote the sentence
        return str(context.get("error", problem["msg"]))
    if problem["type"] == "greater_than_equal":
        return f"{name} must be at least {context['ge']}, got {problem['input']}"
    if problem["type"] == "greater_than":
        return f"{name} must be more than {context['gt']:g}, got {problem['input']}"  # 0, not 0.0
    if problem["type"] == "literal_error":
        return f"{name} must be one of {context['expected']}, got {problem['input']!r}"
    return f"{name}: {problem['msg']}, got {problem['input']!r}"
