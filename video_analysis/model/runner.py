"""One vision-language model, loaded once and owned by one long-lived thread.

Why a thread of its own (see shared notes on mlx-vlm on Linux CPU): mlx
streams are per thread, a thread that generated and then exits makes the
process abort at exit unless it releases its streams, and a model loaded once
is far cheaper than a model per request. Every caller, from any thread, hands
its request to `ModelRunner.submit`, which queues it for the model thread.

Each request carries the caller's CancelToken, checked before it starts,
before every chunk of `PREFILL_CHUNK_TOKENS` of the prompt's prefill and
after every generated token; closing the runner cancels the tokens of the
requests it still holds. Loading is `loading`, prompt limits `prompt_budget`.

The cores the model uses (OpenBLAS's threads, the vision tower's streams) can
be changed between requests (`share_cores`): model workers sharing a machine
split its cores rather than fight over them.
"""
from __future__ import annotations

import atexit
import logging
import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Set, Tuple

from video_analysis.cancellation import CancelToken, Cancelled
from video_analysis.config import DEFAULT_MODEL, Config
from video_analysis.model.cores import usable_cores
from video_analysis.model.cpu_priority import compute_thread
from video_analysis.model.errors import HubUnreachable, ModelLoadError, RunnerClosed, model_display_name
from video_analysis.model.loading import LoadedModel, current_device, load_model, release_thread_streams
from video_analysis.model.memory import give_back_freed_memory
from video_analysis.model.openblas import set_blas_threads
from video_analysis.model.parallel_vision import split_of
from video_analysis.model.prompt_budget import PromptBudget

import mlx.core as mx  # noqa: E402  (after model.loading, which loads OpenBLAS before mlx)

__all__ = ["ModelRunner", "ModelLoadError", "RunnerClosed", "model_display_name", "PREFILL_CHUNK_TOKENS"]
log = logging.getLogger(__name__)

# Tokens of the prompt prefilled per forward pass; cancel is checked before each. Prompts up to this
# length (the tiny model's default prompts at up to ~40 frames) take the very same single pass as
# mlx-vlm's own 2,048-token steps. On the tiny model a chunk near the end of its 8,192-token context
# takes ~0.1 s; on the full-size model ~2-4 s of this CPU (about 0.7 GFLOP per token).
PREFILL_CHUNK_TOKENS = 512
IDLE_SECONDS = 10.0


def _cores_to_use(wanted: Optional[int]) -> int:
    available = usable_cores()
    return max(1, min(wanted or available, available))


@dataclass(eq=False)
class _Request:
    images: list
    messages: list
    max_tokens: int
    cancel: CancelToken
    future: Future = field(default_factory=Future)


class ModelRunner:
    """Owns the model on one thread; `submit` and `generate` may be called from any thread."""

    def __init__(self, model: str = DEFAULT_MODEL, prefill_chunk_tokens: Optional[int] = PREFILL_CHUNK_TOKENS,
                 idle_seconds: float = IDLE_SECONDS):
        """`prefill_chunk_tokens=None` leaves the prefill to mlx-vlm (2,048-token steps, no cancel inside)."""
        self.model_ref = model
        self.name = model_display_name(model)
        self.load_error: Optional[str] = None
        self.hub_unreachable = False  # the load failed only because the Hugging Face Hub could not be reached
        self.load_seconds: Optional[float] = None  # bench.pure_inference reports it
        self.image_size: Optional[int] = None
        self.vision_streams = 1
        self.fast_activation_layers = 0
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.prefill_chunks = 0  # prompt chunks run; bench.experiment_prefill_cancel reports it
        self.prompt_budget: Optional[PromptBudget] = None  # None until loaded, or when prompts cannot be counted
        self.cores: Optional[int] = None  # cores the model uses (threads of its matrix multiply), once loaded
        # Idle this long, the model thread gives the memory mlx freed back to the kernel (model/memory.py): a job's
        # segments follow each other sooner, so only the first segment of a job faults its buffers in again.
        self.idle_seconds = idle_seconds
        self.memory_given_back = 0  # idle spells that did
        self._wanted_cores: Optional[int] = Config.from_env().MODEL_CORES or None  # None: every usable core
        self._loaded = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._unfinished: Set[_Request] = set()  # queued or being served: close cancels their tokens
        self._queue: "queue.Queue[Optional[_Request]]" = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="model-runner", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # -- public, any thread ------------------------------------------------
    @property
    def loaded(self) -> bool:
        return self._loaded.is_set() and self.load_error is None

    @property
    def device(self) -> str:
        return current_device()

    def wait_until_loaded(self, timeout: Optional[float] = None) -> None:
        """Block until the model is ready; raise ModelLoadError if it failed."""
        if not self._loaded.wait(timeout):
            raise ModelLoadError(f"Model '{self.name}' is still loading.")
        if self.load_error:
            raise ModelLoadError(self.load_error)

    def submit(self, images: Sequence, prompt: str, *, system_prompt: Optional[str] = None, max_tokens: int = 64,
               cancel: Optional[CancelToken] = None) -> Future:
        """Queue one generation for the model thread; its Future gives the text.

        The Future raises Cancelled once `cancel` is cancelled (before the request starts,
        between chunks of the prompt's prefill, after any generated token), ModelLoadError
        when there is no model, RunnerClosed when the runner is shut down.
        """
        self.wait_until_loaded()
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": prompt})
        request = _Request(list(images), messages, max_tokens, cancel or CancelToken())
        with self._lock:
            if self._closed:
                raise RunnerClosed("The model runner is shutting down.")
            self._unfinished.add(request)
        self._queue.put(request)
        return request.future

    def generate(self, images: Sequence, prompt: str, **options) -> str:
        """`submit`, then wait for the text."""
        return self.submit(images, prompt, **options).result()

    def prompt_problem(self, system_prompt: Optional[str], user_prompt: Optional[str], frames: int,
                       max_tokens: int, default_system_prompt: str = "",
                       default_user_prompt: str = "") -> Optional[Tuple[str, str]]:
        """`PromptBudget.problem`: (field, sentence) when the prompts do not fit the model's context.

        None when they do, and also when the model is not loaded or its context length is unknown.
        """
        if self.prompt_budget is None:
            return None
        return self.prompt_budget.problem(system_prompt, user_prompt, frames, max_tokens,
                                          default_system_prompt, default_user_prompt)

    def share_cores(self, cores: Optional[int]) -> int:
        """Use `cores` cores (None: every usable one; never more than those) from the next request on; any thread.
        Returns the number it will use.

        Applied on the model thread before it serves a request (`cores` then says what is in use): OpenBLAS's
        threads and the vision tower's streams are changed only between requests.
        """
        self._wanted_cores = cores
        return _cores_to_use(cores)

    def close(self, timeout: float = 30.0) -> None:
        """Cancel the requests held, stop the model thread after the current token; idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            unfinished = list(self._unfinished)
        for request in unfinished:
            request.cancel.cancel()
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # -- the model thread --------------------------------------------------
    def _run(self) -> None:
        compute_thread()  # in a model process: the idle CPU class, for this thread and the streams it starts
        try:
            self._take(load_model(self.model_ref, self.name))
            self._use_wanted_cores()
        except Exception as error:  # noqa: BLE001  (reported to every caller)
            self.load_error = str(error)
            self.hub_unreachable = isinstance(error, HubUnreachable)
            log.error("%s", self.load_error)
        finally:
            self._loaded.set()
        try:
            while True:
                request = self._next_request()
                if request is None:
                    break
                if self.load_error:
                    request.future.set_exception(ModelLoadError(self.load_error))
                else:
                    self._use_wanted_cores()
                    self._serve(request)
                with self._lock:
                    self._unfinished.discard(request)
        finally:
            self._fail_waiting()
            release_thread_streams()

    def _next_request(self) -> Optional[_Request]:
        """The next request; after IDLE_SECONDS without one, freed memory goes back to the kernel first."""
        try:
            return self._queue.get(timeout=self.idle_seconds)
        except queue.Empty:
            if give_back_freed_memory():
                self.memory_given_back += 1
            return self._queue.get()

    def _take(self, loaded: LoadedModel) -> None:
        self._model, self._processor = loaded.model, loaded.processor
        self.image_size = loaded.image_size
        self.vision_streams, self.fast_activation_layers = loaded.vision_streams, loaded.fast_activation_layers
        self.prompt_budget = PromptBudget.of(loaded.model, loaded.processor, loaded.image_size, self.name)
        self.load_seconds = loaded.seconds

    def _use_wanted_cores(self) -> None:
        cores = _cores_to_use(self._wanted_cores)
        if cores == self.cores:
            return
        if self.cores is not None:
            # mlx evaluates lazily: the last request's next token may still be computing. OpenBLAS's pool is
            # resized only once nothing runs on it.
            mx.synchronize()
        set_blas_threads(cores)
        split = split_of(self._model)
        if split is not None:
            self.vision_streams = split.use_streams(cores)
        self.cores = cores
        log.info("The model uses %d of this process's %d usable core(s)", cores, usable_cores())

    def _fail_waiting(self) -> None:
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            if request is not None and not request.future.done():
                request.future.set_exception(RunnerClosed("The model runner is shutting down."))

    def _serve(self, request: _Request) -> None:
        if not request.future.set_running_or_notify_cancel():
            return
        try:
            request.future.set_result(self._generate(request))
        except BaseException as error:  # noqa: BLE001  (handed to the caller)
            request.future.set_exception(error)

    def _generate(self, request: _Request) -> str:
        from mlx_vlm import apply_chat_template, stream_generate

        if request.cancel.cancelled:
            raise Cancelled("Cancelled before generation started.")
        prompt = apply_chat_template(
            self._processor, self._model.config, request.messages, num_images=len(request.images)
        )
        pieces: List[str] = []
        options = {}
        if self.prefill_chunk_tokens is not None:
            options = {"prefill_step_size": self.prefill_chunk_tokens, "prompt_cache": self._watched_cache(request)}
        stream = stream_generate(
            self._model, self._processor, prompt,
            image=request.images or None, max_tokens=request.max_tokens, temperature=0.0, **options,
        )
        try:
            for chunk in stream:
                pieces.append(chunk.text)
                if request.cancel.cancelled:
                    raise Cancelled("Cancelled during generation.")
        finally:
            stream.close()
        return "".join(pieces).strip()

    def _watched_cache(self, request: _Request) -> list:
        """A fresh KV cache (what mlx-vlm would make) whose first layer checks the cancel before a prompt chunk.

        mlx-vlm's generate_step prefills the prompt `prefill_step_size` tokens per forward pass and
        evaluates each pass before building the next; every pass stores its keys in each layer's
        cache first. Raising there stops the prefill between chunks, before the next one is
        computed. One-token passes (generated tokens) are left alone: `_generate` checks those.
        """
        from mlx_vlm.models.cache import make_prompt_cache

        cache = make_prompt_cache(self._model.language_model)
        first = cache[0]
        store = first.update_and_fetch

        def update_and_fetch(keys, values):
            if keys.shape[2] > 1:  # (batch, heads, tokens, head_dim): a chunk of the prompt
                if request.cancel.cancelled:
                    raise Cancelled("Cancelled during the prompt's prefill.")
                self.prefill_chunks += 1
            return store(keys, values)

        first.update_and_fetch = update_and_fetch
        return cache
