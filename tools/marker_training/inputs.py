"""Training inputs exactly as the product builds inference inputs, and a pool of preprocessed frames."""
from __future__ import annotations

import numpy as np

from tools.marker_training.frames import BLUE, NONE, RED, WHITE, render_clip, render_frame
from tools.marker_training.tasks import ANSWER_HIGH, ANSWER_LOW, EXERCISE_ANSWERS, TASKS, messages_for


class ProductInputs:
    """Token ids and pixel values exactly as the product's processor makes them."""

    def __init__(self, model, processor, image_size: int, max_frames: int, rng: np.random.Generator):
        from mlx_vlm.prompt_utils import apply_chat_template
        from mlx_vlm.utils import prepare_inputs, should_add_special_tokens

        self.processor = processor
        self.image_size = image_size
        tok = processor.tokenizer
        self.pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self.eos_id = tok.convert_tokens_to_ids("<end_of_utterance>")
        self.answer_ids = {}
        for text in (ANSWER_HIGH, ANSWER_LOW, *EXERCISE_ANSWERS.values()):
            ids = tok(text, add_special_tokens=False).input_ids
            if tok.decode(ids) != text:
                raise RuntimeError(f"answer {text!r} does not round-trip through the tokenizer")
            self.answer_ids[text] = list(ids) + [self.eos_id]
        add_special = should_add_special_tokens(model.config.model_type, processor)
        image_token_index = getattr(model.config, "image_token_index", None)
        self.prompt_ids = {}
        for task in TASKS:
            for k in range(1, max_frames + 1):
                prompt = apply_chat_template(processor, model.config, messages_for(task), num_images=k)
                frames = render_clip(rng, list(rng.choice([NONE, WHITE, RED, BLUE], size=k)), image_size)
                real = prepare_inputs(
                    processor, images=frames, prompts=prompt, image_token_index=image_token_index,
                    add_special_tokens=add_special, pad_to_uniform_size=False,
                )
                ids = np.asarray(real["input_ids"])[0].tolist()
                mine = self.pixels(frames)
                theirs = np.asarray(real["pixel_values"])[0]
                if mine.shape != theirs.shape or not np.array_equal(mine, theirs):
                    raise RuntimeError("frame preprocessing differs from prepare_inputs")
                mask = real.get("pixel_attention_mask")
                if mask is not None and not np.asarray(mask).all():
                    raise RuntimeError("processor padded the frames; training assumes it does not")
                if sum(1 for i in ids if i == image_token_index) != k * _image_seq_len(processor):
                    raise RuntimeError("unexpected number of image tokens")
                self.prompt_ids[task, k] = ids

    def pixels(self, frames) -> np.ndarray:
        out = self.processor.image_processor([[f] for f in frames], return_row_col_info=True)
        return np.asarray(out["pixel_values"], dtype=np.float32)[:, 0]


def _image_seq_len(processor) -> int:
    return int(getattr(processor, "image_seq_len"))


class FramePool:
    """Preprocessed frames by colour; part of it is replaced by fresh frames every step."""

    def __init__(self, inputs: ProductInputs, rng: np.random.Generator, size: int):
        self.inputs, self.rng = inputs, rng
        per = size // 4
        self.by_colour = {}
        for colour in (NONE, WHITE, RED, BLUE):
            n = per * 2 if colour == NONE else per
            self.by_colour[colour] = self._render(colour, n)

    def _render(self, colour: int, n: int) -> np.ndarray:
        frames = [render_frame(self.rng, colour, self.inputs.image_size) for _ in range(n)]
        return self.inputs.pixels(frames)

    def refresh(self, n: int) -> None:
        for colour in (NONE, WHITE, RED, BLUE):
            count = n // 2 if colour == NONE else max(1, n // 6)
            arr = self.by_colour[colour]
            slots = self.rng.choice(len(arr), size=count, replace=False)
            arr[slots] = self._render(colour, count)

    def pick(self, colour: int) -> np.ndarray:
        arr = self.by_colour[colour]
        return arr[int(self.rng.integers(len(arr)))]
