"""Prompts limited in tokens by what the loaded model's context holds.

`PromptBudget.problem` says why a request's prompts, frames and answer do not
fit, naming the field to change; it answers from any thread with the
tokenizer only, never the model.
"""
from __future__ import annotations

import copy
import logging
import threading
from typing import Optional, Tuple

log = logging.getLogger(__name__)


class PromptBudget:
    """Counts a prompt as the model is fed it: the chat template with both prompts and its frames."""

    def __init__(self, model, processor, image_size: Optional[int], context_tokens: int):
        """Learn what a frame costs in the prompt and keep a tokenizer for request threads.

        Request threads count with their own deep copy of the processor, one at a time
        (`_lock`): mlx-vlm's input preparation on the model thread calls the tokenizer with
        padding, and transformers then sets padding/truncation on the shared Rust tokenizer, which
        raises "Already borrowed" while another thread is encoding with it (huggingface/tokenizers
        #537, transformers #47085; not reproduced here, avoided rather than relied on). What a
        frame adds is measured once through the real processor, on blank frames of the size the
        service sends (square: with image splitting on, the most tiles a frame can give).
        """
        from mlx_vlm import apply_chat_template
        from mlx_vlm.utils import prepare_inputs, should_add_special_tokens
        from PIL import Image

        self.context_tokens = context_tokens  # positions the language model has (prompt + generated)
        self._config = model.config
        self._counting = copy.deepcopy(processor)
        self._add_special = should_add_special_tokens(model.config.model_type, processor)
        self._lock = threading.Lock()
        size = image_size or 64
        fed, counted = [], []
        for count in (1, 2):
            prompt = apply_chat_template(processor, model.config, [{"role": "user", "content": "Look."}],
                                         num_images=count)
            fed.append(prepare_inputs(processor, images=[Image.new("RGB", (size, size))] * count, prompts=prompt,
                                      image_token_index=getattr(model.config, "image_token_index", None),
                                      add_special_tokens=self._add_special)["input_ids"].shape[1])
            counted.append(len(self._counting.tokenizer(prompt, add_special_tokens=self._add_special)["input_ids"]))
        # fed = counted + offset + frames x extra: what the processor adds to each frame's marker in the text
        self._extra = (fed[1] - counted[1]) - (fed[0] - counted[0])
        self._offset = fed[0] - counted[0] - self._extra
        self.tokens_per_frame = fed[1] - fed[0]  # what one frame adds to the prompt

    @classmethod
    def of(cls, model, processor, image_size: Optional[int], name: str) -> Optional["PromptBudget"]:
        """The budget of a loaded model; None (prompts then only limited in bytes) when it cannot be counted."""
        context = _context_length(model.config)
        if context is None:
            log.warning("Model %s does not say how long its context is; prompts are not counted.", name)
            return None
        try:
            return cls(model, processor, image_size, context)
        except Exception as error:  # noqa: BLE001  (the model still works)
            log.warning("Prompts of model %s cannot be counted in tokens: %s", name, error)
            return None

    def prompt_tokens(self, system_prompt: Optional[str], user_prompt: str, frames: int) -> int:
        """Tokens of the prompt the model is fed: the chat template with both prompts and `frames` frames.

        A system prompt of None is left out (as the runner does); "" keeps its empty message.
        """
        from mlx_vlm import apply_chat_template

        messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
        messages.append({"role": "user", "content": user_prompt})
        with self._lock:
            prompt = apply_chat_template(self._counting, self._config, messages, num_images=frames)
            tokens = len(self._counting.tokenizer(prompt, add_special_tokens=self._add_special)["input_ids"])
        return tokens + self._offset + frames * self._extra

    def problem(self, system_prompt: Optional[str], user_prompt: Optional[str], frames: int, max_tokens: int,
                default_system_prompt: str = "", default_user_prompt: str = "") -> Optional[Tuple[str, str]]:
        """Why these prompts do not fit the model's context, or None when they do.

        A prompt given as None (or "") is replaced by its default, as the engine does. The
        prompt with `frames` frames must leave `max_tokens` positions of the context free. The
        answer is (field, sentence): the given prompt with the most tokens (user_prompt on a
        tie), with the limit in tokens left for it; frames_per_segment or max_tokens when the
        frames and the answer alone leave no room.
        """
        context, room_total = self.context_tokens, self.context_tokens - max_tokens
        given = {"system_prompt": system_prompt or None, "user_prompt": user_prompt or None}
        prompts = {"system_prompt": given["system_prompt"] or default_system_prompt or None,
                   "user_prompt": given["user_prompt"] or default_user_prompt}
        total = self.prompt_tokens(prompts["system_prompt"], prompts["user_prompt"], frames)
        if total <= room_total:
            return None

        def count_without(*fields: str) -> int:  # the prompt with these fields' text emptied
            kept = {name: ("" if name in fields else value) for name, value in prompts.items()}
            return self.prompt_tokens(kept["system_prompt"], kept["user_prompt"], frames)

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


def _context_length(config) -> Optional[int]:
    """Positions the language model has: its text config's max_position_embeddings."""
    for owner in (getattr(config, "text_config", None), config):
        value = getattr(owner, "max_position_embeddings", None)
        if isinstance(value, int) and value > 0:
            return value
    return None
