"""One vision-language model, loaded once and owned by one long-lived thread.

Why a thread of its own (see shared notes on mlx-vlm on Linux CPU): mlx
streams are per thread, a thread that generated and then exits makes the
process abort at exit unless it releases its streams, and a model loaded once
is far cheaper than a model per request. Every caller, from any thread, hands
its request to `ModelRunner.generate`, which queues it for the model thread
and waits for the answer.

On Linux CPU the runner loads OpenBLAS before mlx (≈30× faster matrix
multiply than the bundled reference BLAS), uses float32 weights, turns
image splitting off, computes the vision tower's softmax and GELU with powers
of two (fast_activations) and splits the frames of a request across one CPU
stream per core there (parallel_vision). On macOS it keeps mlx's Metal defaults.
"""
from __future__ import annotations

import atexit
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

log = logging.getLogger(__name__)

DEFAULT_MODEL = "mlx-community/SmolVLM2-500M-Video-Instruct-mlx"
# Models whose vision tower is the SigLIP-style encoder that fast_activations
# and parallel_vision were written and checked against.
_SIGLIP_VISION_MODEL_TYPES = {"smolvlm", "idefics3"}
from openblas import preload_openblas  # noqa: E402

preload_openblas()

import mlx.core as mx  # noqa: E402  (after OpenBLAS, on purpose)

import fast_activations  # noqa: E402
import parallel_vision  # noqa: E402
from cancellation import Cancelled  # noqa: E402


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message names it and says why."""


class RunnerClosed(RuntimeError):
    """The model thread has stopped; no more requests are taken."""


def model_display_name(model: str) -> str:
    """A local directory is named by its base name, never by its full path."""
    if os.path.isdir(model) or os.path.isabs(model) or model.startswith("."):
        return os.path.basename(os.path.normpath(model)) or model
    return model


@dataclass
class _Request:
    images: list
    messages: list
    max_tokens: int
    cancel: Optional[threading.Event]
    future: Future = field(default_factory=Future)


class ModelRunner:
    """Owns the model on one thread; `generate` may be called from any thread."""

    def __init__(self, model: str = DEFAULT_MODEL):
        self.model_ref = model
        self.name = model_display_name(model)
        self.load_error: Optional[str] = None
        self.load_seconds: Optional[float] = None
        self.image_size: Optional[int] = None
        self.vision_streams = 1  # CPU streams the vision tower is split across (parallel_vision)
        self.fast_activation_layers = 0  # vision layers using fast_activations
        self.completed_generations = 0  # finished (not cancelled) generations, for tests and /health
        self._loaded = threading.Event()
        self._stopping = threading.Event()
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
        return "gpu" if mx.default_device() == mx.gpu else "cpu"

    def wait_until_loaded(self, timeout: Optional[float] = None) -> None:
        """Block until the model is ready; raise ModelLoadError if it failed."""
        if not self._loaded.wait(timeout):
            raise ModelLoadError(f"Model '{self.name}' is still loading.")
        if self.load_error:
            raise ModelLoadError(self.load_error)

    def submit(
        self,
        images: Sequence,
        prompt: str,
        *,
        system_prompt: Optional[str] = None,
        max_tokens: int = 64,
        cancel: Optional[threading.Event] = None,
    ) -> Future:
        """Queue one generation for the model thread; its Future gives the text.

        The Future raises Cancelled when `cancel` is set (checked before the
        request starts and after every generated token), ModelLoadError when
        there is no model, RunnerClosed when the runner is shut down.
        """
        self.wait_until_loaded()
        if self._stopping.is_set():
            raise RunnerClosed("The model runner is shutting down.")
        messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
        messages.append({"role": "user", "content": prompt})
        request = _Request(images=list(images), messages=messages, max_tokens=max_tokens, cancel=cancel)
        self._queue.put(request)
        return request.future

    def generate(self, images: Sequence, prompt: str, **options) -> str:
        """`submit`, then wait for the text."""
        return self.submit(images, prompt, **options).result()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the model thread after the current token; idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    # -- the model thread --------------------------------------------------
    def _run(self) -> None:
        try:
            self._load()
        except Exception as error:  # noqa: BLE001  (reported to every caller)
            self.load_error = str(error)
            log.error("%s", self.load_error)
        finally:
            self._loaded.set()
        try:
            while True:
                request = self._queue.get()
                if request is None:
                    break
                if self.load_error:
                    request.future.set_exception(ModelLoadError(self.load_error))
                    continue
                self._serve(request)
        finally:
            self._fail_waiting()
            # Release this thread's mlx streams, or the process aborts at exit.
            clear = getattr(mx, "clear_streams", None)
            if clear is not None:
                clear()

    def _fail_waiting(self) -> None:
        while True:
            try:
                request = self._queue.get_nowait()
            except queue.Empty:
                return
            if request is not None and not request.future.done():
                request.future.set_exception(RunnerClosed("The model runner is shutting down."))

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            from mlx_vlm import load

            model, processor = load(self.model_ref)
        except Exception as error:  # noqa: BLE001
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            if os.path.isabs(self.model_ref) or os.path.isdir(self.model_ref):
                reason = reason.replace(os.path.abspath(self.model_ref), self.name).replace(self.model_ref, self.name)
            raise ModelLoadError(f"Model '{self.name}' could not be loaded: {reason}") from None
        if self.device == "cpu":
            # float32 on CPU: bfloat16/float16 are several times slower there.
            model.set_dtype(mx.float32)
            image_processor = getattr(processor, "image_processor", None)
            if image_processor is not None and hasattr(image_processor, "do_image_splitting"):
                # Splitting a frame into tiles multiplies vision work ~13x.
                image_processor.do_image_splitting = False
            if getattr(model.config, "model_type", None) in _SIGLIP_VISION_MODEL_TYPES:
                # mlx's CPU exp/tanh are slow and single-core: cheaper formulas, then every core.
                self.fast_activation_layers = fast_activations.enable(model.vision_model)
                self.vision_streams = parallel_vision.enable(model)
        mx.eval(model.parameters())
        self._model, self._processor = model, processor
        self.image_size = _longest_edge(processor)
        self.load_seconds = time.perf_counter() - started
        log.info("Loaded model %s in %.2f s on %s (vision tower on %d streams)",
                 self.name, self.load_seconds, self.device, self.vision_streams)

    def _serve(self, request: _Request) -> None:
        if not request.future.set_running_or_notify_cancel():
            return
        try:
            text = self._generate(request)
            self.completed_generations += 1
            request.future.set_result(text)
        except BaseException as error:  # noqa: BLE001  (handed to the caller)
            request.future.set_exception(error)

    def _generate(self, request: _Request) -> str:
        from mlx_vlm import apply_chat_template, stream_generate

        if self._cancelled(request):
            raise Cancelled("Cancelled before generation started.")
        prompt = apply_chat_template(
            self._processor, self._model.config, request.messages, num_images=len(request.images)
        )
        pieces: List[str] = []
        stream = stream_generate(
            self._model, self._processor, prompt,
            image=request.images or None, max_tokens=request.max_tokens, temperature=0.0,
        )
        try:
            for chunk in stream:
                pieces.append(chunk.text)
                if self._cancelled(request):
                    raise Cancelled("Cancelled during generation.")
        finally:
            stream.close()
        return "".join(pieces).strip()

    def _cancelled(self, request: _Request) -> bool:
        return self._stopping.is_set() or (request.cancel is not None and request.cancel.is_set())


def _longest_edge(processor) -> Optional[int]:
    image_processor = getattr(processor, "image_processor", None)
    for attribute in ("max_image_size", "size"):
        value = getattr(image_processor, attribute, None)
        if isinstance(value, dict) and value.get("longest_edge"):
            return int(value["longest_edge"])
    return None
