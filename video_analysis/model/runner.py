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

Prompts are limited in tokens by what the loaded model's context holds
(`prompt_problem`, answered from any thread with the tokenizer only), and a
prompt is prefilled in chunks of `PREFILL_CHUNK_TOKENS` with the request's
cancel checked before each chunk, so a cancel also stops a long prefill.
"""
from __future__ import annotations

import atexit
import copy
import logging
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

log = logging.getLogger(__name__)

from video_analysis.config import DEFAULT_MODEL  # noqa: E402,F401  (the CLI and callers take it from here too)
# Models whose vision tower is the SigLIP-style encoder that fast_activations
# and parallel_vision were written and checked against.
_SIGLIP_VISION_MODEL_TYPES = {"smolvlm", "idefics3"}
from video_analysis.model.openblas import preload_openblas  # noqa: E402

preload_openblas()

import mlx.core as mx  # noqa: E402  (after OpenBLAS, on purpose)

from video_analysis.model import fast_activations  # noqa: E402
from video_analysis.model import parallel_vision  # noqa: E402
from video_analysis.cancellation import Cancelled  # noqa: E402


# Tokens of the prompt prefilled per forward pass; cancel is checked before each. Prompts up to this
# length (the tiny model's default prompts at up to ~40 frames) take the very same single pass as
# mlx-vlm's own 2,048-token steps. On the tiny model a chunk near the end of its 8,192-token context
# takes ~0.1 s; on the full-size model ~2-4 s of this CPU (about 0.7 GFLOP per token).
PREFILL_CHUNK_TOKENS = 512


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

    def __init__(self, model: str = DEFAULT_MODEL, prefill_chunk_tokens: Optional[int] = PREFILL_CHUNK_TOKENS):
        """`prefill_chunk_tokens=None` leaves the prefill to mlx-vlm (2,048-token steps, no cancel inside)."""
        self.model_ref = model
        self.name = model_display_name(model)
        self.load_error: Optional[str] = None
        self.load_seconds: Optional[float] = None
        self.image_size: Optional[int] = None
        self.vision_streams = 1  # CPU streams the vision tower is split across (parallel_vision)
        self.fast_activation_layers = 0  # vision layers using fast_activations
        self.completed_generations = 0  # finished (not cancelled) generations, for tests and /health
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.prefill_chunks = 0  # prompt chunks run through the language model, for tests and benchmarks
        self.context_tokens: Optional[int] = None  # positions the language model has (prompt + generated)
        self.tokens_per_frame: Optional[int] = None  # what one frame adds to the prompt
        self._count_lock = threading.Lock()
        self._counter = None  # (processor copy, config, add_special_tokens, tokens a frame adds to its marker, offset)
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
        request starts, before every chunk of the prompt's prefill and after
        every generated token), ModelLoadError when
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

    def prompt_problem(
        self,
        system_prompt: Optional[str],
        user_prompt: Optional[str],
        frames: int,
        max_tokens: int,
        default_system_prompt: str = "",
        default_user_prompt: str = "",
    ) -> Optional[Tuple[str, str]]:
        """Why these prompts do not fit the model's context, or None when they do.

        A prompt given as None (or "") is replaced by its default, as the engine does. The
        prompt with `frames` frames is counted with the loaded processor's chat template and
        tokenizer (no model call; safe from any thread) and must leave `max_tokens` positions of
        the context free. The answer is (field, sentence): the given prompt with the most tokens
        (user_prompt on a tie), with the limit in tokens left for it; frames_per_segment or
        max_tokens when the frames and the answer alone leave no room. None also when the model
        is not loaded or its context length is unknown.
        """
        if self._counter is None or self.context_tokens is None:
            return None
        context, room_total = self.context_tokens, self.context_tokens - max_tokens
        given = {"system_prompt": system_prompt or None, "user_prompt": user_prompt or None}
        prompts = {"system_prompt": given["system_prompt"] or default_system_prompt or None,
                   "user_prompt": given["user_prompt"] or default_user_prompt}
        total = self._prompt_tokens(prompts["system_prompt"], prompts["user_prompt"], frames)
        if total <= room_total:
            return None

        def count_without(*fields: str) -> int:  # the prompt with these fields' text emptied
            kept = {name: ("" if name in fields else value) for name, value in prompts.items()}
            return self._prompt_tokens(kept["system_prompt"], kept["user_prompt"], frames)

        frame_tokens = frames * self.tokens_per_frame
        what_else = f"frames_per_segment {frames} ({frame_tokens:,} tokens of frames) and max_tokens {max_tokens}"
        fields = [name for name in ("user_prompt", "system_prompt") if given[name]]
        sizes = {name: total - count_without(name) for name in fields}
        if fields and count_without(*fields) <= room_total:
            field = max(fields, key=lambda name: sizes[name])  # max keeps the first (user_prompt) on a tie
            room = room_total - (total - sizes[field])
            if room >= 1:
                other = [name for name in fields if name != field]
                return field, (
                    f"'{field}' is {sizes[field]:,} tokens long, but with {what_else} the model's context of "
                    f"{context:,} tokens leaves room for at most {room:,} tokens of {field}. Shorten it"
                    + (f" (or {other[0]})" if other else "") + ", or lower frames_per_segment or max_tokens.")
            room = room_total - count_without(*fields)
            return field, (
                f"'user_prompt' and 'system_prompt' are {sizes['user_prompt']:,} and {sizes['system_prompt']:,} "
                f"tokens long, but with {what_else} the model's context of {context:,} tokens leaves room for at "
                f"most {room:,} tokens of both together. Shorten them, or lower frames_per_segment or max_tokens.")
        field = "frames_per_segment" if frame_tokens >= max_tokens else "max_tokens"
        needed = count_without(*fields) + max_tokens
        return field, (
            f"With {what_else} the prompt and its answer need {needed:,} tokens, but the model's context holds "
            f"at most {context:,} tokens. Lower frames_per_segment or max_tokens.")

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
        try:
            self._prepare_counting(model, processor)
        except Exception as error:  # noqa: BLE001  (the model still works; prompts are then only limited in bytes)
            log.warning("Prompts of model %s cannot be counted in tokens: %s", self.name, error)
        self.load_seconds = time.perf_counter() - started
        log.info("Loaded model %s in %.2f s on %s (vision tower on %d streams)",
                 self.name, self.load_seconds, self.device, self.vision_streams)

    def _prepare_counting(self, model, processor) -> None:
        """Learn what a frame costs in the prompt and keep a tokenizer for request threads.

        Request threads count with their own deep copy of the processor, one at a time
        (`_count_lock`): mlx-vlm's input preparation on the model thread calls the tokenizer with
        padding, and transformers then sets padding/truncation on the shared Rust tokenizer, which
        raises "Already borrowed" while another thread is encoding with it (huggingface/tokenizers
        #537, transformers #47085; not reproduced here, avoided rather than relied on). What a
        frame adds is measured once through the real processor, on blank frames of the size the
        service sends (square: with image splitting on, the most tiles a frame can give).
        """
        from mlx_vlm import apply_chat_template
        from mlx_vlm.utils import prepare_inputs, should_add_special_tokens
        from PIL import Image

        context = _context_length(model.config)
        if context is None:
            log.warning("Model %s does not say how long its context is; prompts are not counted.", self.name)
            return
        counting = copy.deepcopy(processor)
        add_special = should_add_special_tokens(model.config.model_type, processor)
        size = self.image_size or 64
        fed, counted = [], []
        for count in (1, 2):
            prompt = apply_chat_template(processor, model.config, [{"role": "user", "content": "Look."}],
                                         num_images=count)
            fed.append(prepare_inputs(processor, images=[Image.new("RGB", (size, size))] * count, prompts=prompt,
                                      image_token_index=getattr(model.config, "image_token_index", None),
                                      add_special_tokens=add_special)["input_ids"].shape[1])
            counted.append(len(counting.tokenizer(prompt, add_special_tokens=add_special)["input_ids"]))
        # fed = counted + offset + frames x extra: what the processor adds to each frame's marker in the text
        extra = (fed[1] - counted[1]) - (fed[0] - counted[0])
        offset = fed[0] - counted[0] - extra
        self._counter = (counting, model.config, add_special, extra, offset)
        self.tokens_per_frame = fed[1] - fed[0]
        self.context_tokens = context

    def _prompt_tokens(self, system_prompt: Optional[str], user_prompt: str, frames: int) -> int:
        """Tokens of the prompt the model is fed: the chat template with both prompts and `frames` frames.

        A system prompt of None is left out (as `submit` does); "" keeps its empty message.
        """
        from mlx_vlm import apply_chat_template

        counting, config, add_special, extra, offset = self._counter
        messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        messages.append({"role": "user", "content": user_prompt})
        with self._count_lock:
            prompt = apply_chat_template(counting, config, messages, num_images=frames)
            tokens = len(counting.tokenizer(prompt, add_special_tokens=add_special)["input_ids"])
        return tokens + offset + frames * extra

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
                if self._cancelled(request):
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
                if self._cancelled(request):
                    raise Cancelled("Cancelled during the prompt's prefill.")
                self.prefill_chunks += 1
            return store(keys, values)

        first.update_and_fetch = update_and_fetch
        return cache

    def _cancelled(self, request: _Request) -> bool:
        return self._stopping.is_set() or (request.cancel is not None and request.cancel.is_set())


def _context_length(config) -> Optional[int]:
    """Positions the language model has: its text config's max_position_embeddings."""
    for owner in (getattr(config, "text_config", None), config):
        value = getattr(owner, "max_position_embeddings", None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def _longest_edge(processor) -> Optional[int]:
    image_processor = getattr(processor, "image_processor", None)
    for attribute in ("max_image_size", "size"):
        value = getattr(image_processor, attribute, None)
        if isinstance(value, dict) and value.get("longest_edge"):
            return int(value["longest_edge"])
    return None
