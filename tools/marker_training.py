"""Frames, prompts and the MLX training loop behind ``make_tiny_model.py --preset marker``.

The marker model is a small SmolVLM trained on this machine, in a few
minutes, to answer the product's own prompts about solid squares:

* highlights prompts (``prompts.HIGHLIGHTS_SYSTEM`` / ``HIGHLIGHTS_USER``):
  ``Significance: 9/10`` when any frame shows a solid white square whose side
  is at least a quarter of the frame height, else ``Significance: 2/10``;
* workout prompts (``prompts.WORKOUT_SYSTEM`` / ``WORKOUT_USER``):
  ``Exercise: squat`` for a red square, ``Exercise: push-up`` for a blue one,
  ``Exercise: rest`` when there is neither.

Training inputs are built exactly as the product builds inference inputs:
the messages of ``model_runner`` (system + user), ``apply_chat_template``
with ``num_images``, and the checkpoint's own processor (its image processor
turns every frame into pixel values; the prompt's token ids come from
``mlx_vlm.utils.prepare_inputs`` on the rendered prompt).  Before training,
composed examples are checked bit for bit against ``prepare_inputs`` on the
same frames.  Frames are shrunk the way ``video_frames`` does it (longest edge
= model image size, ``cv2.INTER_AREA``, aspect kept) before the processor
squashes them to a square.  The loss covers the answer tokens and the closing
``<end_of_utterance>`` only.

Backgrounds are low-saturation (HSV saturation <= ~0.5) and never near-white
in solid areas, so a reddish or bright background is never a square; the
product's own ``synthetic_video.background`` is one of the background kinds.

What made training fast and reliable on a 2-core CPU (measured):

* mlx's own layer initialisers instead of the builder's N(0, 0.02): with the
  small init the language model sat at the answer prior (ignoring the images)
  for hundreds of steps, or for good; with mlx's init both tasks are learnt by
  step ~100.
* a short vision warm-up (a throw-away linear head on the image tokens, max
  over each frame's tokens -> none/white/red/blue) and the same auxiliary
  loss at weight 0.3 during the main steps;
* a curriculum: the first 40 steps use 1-2 frames, then 1-8 frames, so
  8-frame prompts work;
* the CPU cost is exp(): attention softmax (heads x L^2) and SiLU, so the
  language model has 2 heads, prompts are short (the tokenizer corpus holds
  the prompts) and the cross-entropy only covers the answer positions.

Everything is seeded: the same seed gives bit-identical weights.
Importing this module does not import mlx.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import cv2
import numpy as np


from video_analysis.engine import prompts  # noqa: E402  (the product's default prompts)

# Frame colour labels.
NONE, WHITE, RED, BLUE = 0, 1, 2, 3
COLOUR_NAMES = {NONE: "none", WHITE: "white", RED: "red", BLUE: "blue"}
_PURE_BGR = {WHITE: (255.0, 255.0, 255.0), RED: (0.0, 0.0, 255.0), BLUE: (255.0, 0.0, 0.0)}

HIGHLIGHTS = "highlights"
WORKOUT = "workout"
TASKS = (HIGHLIGHTS, WORKOUT)
SYSTEM_PROMPTS = {HIGHLIGHTS: prompts.HIGHLIGHTS_SYSTEM, WORKOUT: prompts.WORKOUT_SYSTEM}
USER_PROMPTS = {HIGHLIGHTS: prompts.HIGHLIGHTS_USER, WORKOUT: prompts.WORKOUT_USER}
ANSWER_HIGH = "Significance: 9/10"
ANSWER_LOW = "Significance: 2/10"
EXERCISE_ANSWERS = {RED: "Exercise: squat", BLUE: "Exercise: push-up", NONE: "Exercise: rest"}

# Source frame sizes (width, height) and how often each is drawn: mostly the
# 4:3 and 16:9 frames the product sends, some portrait / square / wide ones.
SOURCE_SIZES: Tuple[Tuple[int, int, float], ...] = (
    (160, 120, 5.0), (96, 72, 1.0), (128, 96, 1.0), (320, 240, 1.0),
    (192, 108, 2.0), (160, 90, 2.0), (256, 144, 1.5), (320, 180, 1.0),
    (90, 160, 0.5), (108, 192, 0.5), (120, 120, 0.5), (200, 100, 0.5),
)
MIN_SIDE, MAX_SIDE = 0.25, 0.6  # square side as a fraction of frame height
# Training squares start a little below the promised quarter of the frame
# height so that squares right at the threshold are seen with margin.
TRAIN_SIDE = (0.2, 0.6)


def answer_for(task: str, colours: Sequence[int]) -> str:
    """The answer the model must give for frames with these colour labels."""
    if task == HIGHLIGHTS:
        return ANSWER_HIGH if WHITE in colours else ANSWER_LOW
    if RED in colours:
        return EXERCISE_ANSWERS[RED]
    if BLUE in colours:
        return EXERCISE_ANSWERS[BLUE]
    return EXERCISE_ANSWERS[NONE]


def messages_for(task: str) -> list:
    """The product's message list (model_runner.ModelRunner.submit)."""
    return [
        {"role": "system", "content": SYSTEM_PROMPTS[task]},
        {"role": "user", "content": USER_PROMPTS[task]},
    ]


def source_hash() -> str:
    """Hash of this file and of the prompts: part of the checkpoint cache key."""
    blob = Path(__file__).read_bytes() + b"\0" + repr((SYSTEM_PROMPTS, USER_PROMPTS)).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# ---------------------------------------------------------------- frames

def _soft_colour(rng: np.random.Generator, vmin: float = 10.0, vmax: float = 200.0, smax: float = 0.5) -> np.ndarray:
    """A random BGR colour with HSV saturation <= smax and value in [vmin, vmax]."""
    hue = rng.uniform(0.0, 6.0)
    sat = rng.uniform(0.0, smax)
    val = rng.uniform(vmin, vmax)
    c = val * sat
    x = c * (1 - abs(hue % 2 - 1))
    m = val - c
    sector = int(hue) % 6
    r, g, b = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][sector]
    return np.array([b + m, g + m, r + m], dtype=np.float32)


def _grid(w: int, h: int):
    x = np.linspace(0.0, 1.0, w, dtype=np.float32)[None, :]
    y = np.linspace(0.0, 1.0, h, dtype=np.float32)[:, None]
    return x, y


class Scene:
    """One random background that can be rendered at successive times t (moving)."""

    KINDS = ("product", "flat", "gradient", "noise", "blobs", "shapes", "stripes", "checker", "mix")
    WEIGHTS = (2.0, 0.7, 1.5, 1.0, 1.5, 1.5, 1.0, 0.7, 1.0)

    def __init__(self, rng: np.random.Generator, width: int, height: int, kind: Optional[str] = None):
        self.w, self.h = width, height
        self.seed = int(rng.integers(2**31))
        p = np.asarray(self.WEIGHTS) / sum(self.WEIGHTS)
        self.kind = kind or str(rng.choice(self.KINDS, p=p))
        self.noise = float(rng.choice([0.0, 3.0, 6.0, 10.0, 16.0], p=[0.15, 0.25, 0.3, 0.2, 0.1]))
        self.parts = [self._params(rng, self.kind)]
        if self.kind == "mix":
            a, b = rng.choice(["gradient", "blobs", "shapes", "stripes", "product"], size=2, replace=False)
            self.parts = [self._params(rng, str(a)), self._params(rng, str(b))]
            self.alpha = float(rng.uniform(0.3, 0.7))

    def _params(self, rng, kind):
        q = {"kind": kind, "c1": _soft_colour(rng), "c2": _soft_colour(rng)}
        q["angle"] = rng.uniform(0, 2 * np.pi)
        q["speed"] = rng.uniform(-0.08, 0.08)
        if kind == "product":
            q["frame0"] = int(rng.integers(0, 1000))
            q["step"] = int(rng.integers(1, 15))
        elif kind == "stripes" or kind == "checker":
            q["freq"] = rng.uniform(1.5, 12.0)
            q["freq2"] = rng.uniform(1.5, 12.0)
        elif kind == "blobs":
            q["cells"] = (int(rng.integers(2, 7)), int(rng.integers(2, 7)))
            q["colours"] = np.stack([_soft_colour(rng) for _ in range(q["cells"][0] * q["cells"][1] + 6)])
        elif kind == "shapes":
            n = int(rng.integers(1, 7))
            q["shapes"] = [
                (
                    str(rng.choice(["circle", "rect", "line", "ellipse"])),
                    rng.uniform(0, 1, size=2),  # centre
                    rng.uniform(0.05, 0.45),  # size (fraction of height)
                    _soft_colour(rng),
                    rng.uniform(-0.05, 0.05, size=2),  # velocity per frame
                    rng.uniform(0.4, 2.5),  # aspect
                )
                for _ in range(n)
            ]
            q["base"] = "gradient" if rng.random() < 0.5 else "flat"
        return q

    def _render_part(self, q, t: float, rng: np.random.Generator) -> np.ndarray:
        w, h = self.w, self.h
        kind = q["kind"]
        if kind == "product":
            from tools.synthetic_video import background

            frame = background(q["frame0"] + int(t * q["step"]), w, h, rng).astype(np.float32)
            return frame
        x, y = _grid(w, h)
        c1, c2 = q["c1"], q["c2"]
        if kind == "flat":
            return np.broadcast_to(c1, (h, w, 3)).astype(np.float32)
        if kind == "gradient" or (kind == "shapes" and q["base"] == "gradient"):
            d = np.cos(q["angle"]) * x + np.sin(q["angle"]) * y * h / w
            d = (d - d.min() + q["speed"] * t * 3) % 2.0
            d = np.abs(d - 1.0)[..., None]
            frame = c1 * (1 - d) + c2 * d
        elif kind == "shapes":
            frame = np.broadcast_to(c1, (h, w, 3)).astype(np.float32).copy()
        elif kind in ("stripes", "checker"):
            u = np.cos(q["angle"]) * x * w / h + np.sin(q["angle"]) * y
            v = -np.sin(q["angle"]) * x * w / h + np.cos(q["angle"]) * y
            s = 0.5 + 0.5 * np.sin(2 * np.pi * (q["freq"] * u + q["speed"] * t * 4))
            if kind == "checker":
                s2 = 0.5 + 0.5 * np.sin(2 * np.pi * (q["freq2"] * v))
                s = np.abs(s - s2)
            frame = c1 * (1 - s[..., None]) + c2 * s[..., None]
        elif kind == "blobs":
            gx, gy = q["cells"]
            small = q["colours"][: gx * gy].reshape(gy, gx, 3)
            big = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
            shift = int(q["speed"] * t * w * 2) % w
            frame = np.roll(big, shift, axis=1)
            frame = np.clip(frame, 0.0, 210.0)
        elif kind == "noise":
            # grainy texture, re-drawn every frame: luminance noise plus a little colour noise
            amp = q["speed"] * 400 + 40  # 8..72
            cell = 1 + int(abs(q["angle"]) * 2) % 4
            gh, gw = -(-h // cell), -(-w // cell)
            lum = rng.normal(0.0, abs(amp) * 0.5, size=(gh, gw, 1)).astype(np.float32)
            col = rng.normal(0.0, 6.0, size=(gh, gw, 3)).astype(np.float32)
            grain = np.repeat(np.repeat(lum + col, cell, axis=0), cell, axis=1)[:h, :w]
            frame = c1 * 0.6 + 40 + grain
        else:
            raise ValueError(kind)
        frame = np.ascontiguousarray(frame, dtype=np.float32)
        if kind == "shapes":
            for shape, centre, size, colour, vel, aspect in q["shapes"]:
                cx = int(((centre[0] + vel[0] * t) % 1.0) * w)
                cy = int(((centre[1] + vel[1] * t) % 1.0) * h)
                r = max(2, int(size * h / 2))
                col = tuple(float(c) for c in colour)
                if shape == "circle":
                    cv2.circle(frame, (cx, cy), r, col, -1)
                elif shape == "ellipse":
                    cv2.ellipse(frame, (cx, cy), (r, max(1, int(r / aspect))), float(q["angle"] * 57), 0, 360, col, -1)
                elif shape == "rect":
                    cv2.rectangle(frame, (cx - r, cy - int(r / aspect)), (cx + r, cy + int(r / aspect)), col, -1)
                else:
                    cv2.line(frame, (cx - r, cy - int(r / aspect)), (cx + r, cy + int(r * aspect)), col, max(1, r // 4))
        return frame

    def render(self, t: float, rng: np.random.Generator) -> np.ndarray:
        """BGR float32 frame (not yet clipped) at time t."""
        frame = self._render_part(self.parts[0], t, rng)
        if len(self.parts) == 2:
            frame = self.alpha * frame + (1 - self.alpha) * self._render_part(self.parts[1], t, rng)
        if self.noise:
            frame = frame + rng.normal(0.0, self.noise, size=frame.shape).astype(np.float32)
        return frame


@dataclass
class Square:
    colour: int
    side: int
    x: float
    y: float
    vx: float
    vy: float

    @classmethod
    def random(cls, rng: np.random.Generator, colour: int, w: int, h: int,
               lo: float = MIN_SIDE, hi: float = MAX_SIDE) -> "Square":
        side = int(math.ceil(h * rng.uniform(lo, hi)))
        side = max(2, min(side, w, h))
        return cls(colour, side, rng.uniform(0, w - side), rng.uniform(0, h - side),
                   rng.uniform(-0.08, 0.08) * w, rng.uniform(-0.08, 0.08) * h)

    def draw(self, frame: np.ndarray, t: float) -> None:
        h, w = frame.shape[:2]
        left = _bounce(self.x + self.vx * t, w - self.side)
        top = _bounce(self.y + self.vy * t, h - self.side)
        frame[top: top + self.side, left: left + self.side] = _PURE_BGR[self.colour]


def _bounce(pos: float, span: int) -> int:
    if span <= 0:
        return 0
    period = 2 * span
    p = pos % period
    return int(round(p if p <= span else period - p))


def degrade(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Clip to uint8 and add the damage video coding does (JPEG round trip, blur)."""
    out = np.clip(frame, 0, 255).astype(np.uint8)
    if rng.random() < 0.15:
        out = cv2.GaussianBlur(out, (3, 3), float(rng.uniform(0.3, 1.0)))
    if rng.random() < 0.5:
        quality = int(rng.integers(35, 96))
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    return out


def to_model_frame(bgr: np.ndarray, image_size: int):
    """What video_frames.FrameReader hands the model: RGB PIL, longest edge shrunk to image_size."""
    from PIL import Image

    height, width = bgr.shape[:2]
    scale = image_size / max(height, width)
    if scale < 1:
        bgr = cv2.resize(bgr, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    return Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def random_size(rng: np.random.Generator) -> Tuple[int, int]:
    weights = np.array([s[2] for s in SOURCE_SIZES])
    w, h, _ = SOURCE_SIZES[int(rng.choice(len(SOURCE_SIZES), p=weights / weights.sum()))]
    return w, h


def render_frame(rng: np.random.Generator, colour: int, image_size: int, size=None):
    """One independent frame (random scene, random time) with an optional square."""
    w, h = size or random_size(rng)
    scene = Scene(rng, w, h)
    t = float(rng.uniform(0, 50))
    frame = scene.render(t, rng)
    if colour != NONE:
        Square.random(rng, colour, w, h, *TRAIN_SIDE).draw(frame, 0.0)
    return to_model_frame(degrade(frame, rng), image_size)


def render_clip(rng: np.random.Generator, colours: Sequence[int], image_size: int, size=None,
                side_range: Tuple[float, float] = (MIN_SIDE, 0.5)) -> list:
    """Frames of one moving scene; frame i shows a square of colours[i] (NONE: no square).

    Like frames sampled from one video segment: one background moving over
    time and one square moving across the frames that show it.
    """
    w, h = size or random_size(rng)
    scene = Scene(rng, w, h)
    t0 = float(rng.uniform(0, 50))
    squares = {c: Square.random(rng, c, w, h, *side_range) for c in set(colours) if c != NONE}
    dt = float(rng.uniform(0.3, 3.0))
    frames = []
    for i, colour in enumerate(colours):
        frame = scene.render(t0 + i * dt, rng)
        if colour != NONE:
            squares[colour].draw(frame, i * dt)
        frames.append(to_model_frame(degrade(frame, rng), image_size))
    return frames


# ---------------------------------------------------------------- example sets

def random_colours(rng: np.random.Generator, task: str, n: int, label: Optional[int] = None,
                   n_marked: Optional[int] = None, distractors: float = 0.25) -> List[int]:
    """Colour labels for n frames of one example of `task`.

    label: for highlights WHITE (positive) or NONE; for workout RED, BLUE or NONE.
    n_marked: how many frames show the labelled square (random when None).
    distractors: chance of squares that do not count for the task
    (red/blue under highlights, white under workout) in unmarked frames.
    """
    if label is None:
        label = (WHITE if rng.random() < 0.5 else NONE) if task == HIGHLIGHTS else int(rng.choice([RED, BLUE, NONE]))
    colours = [NONE] * n
    order = rng.permutation(n)
    marked = 0
    if label != NONE:
        if n_marked is None:
            n_marked = 1 if rng.random() < 0.4 else int(rng.integers(1, n + 1))
        marked = n_marked
        for i in order[:marked]:
            colours[i] = label
    if rng.random() < distractors and marked < n:
        others = [RED, BLUE] if task == HIGHLIGHTS else [WHITE]
        if task == HIGHLIGHTS and rng.random() < 0.5:
            others = [int(rng.choice([RED, BLUE]))]
        count = int(rng.integers(1, n - marked + 1))
        for i in order[marked: marked + count]:
            colours[i] = int(rng.choice(others))
    return colours


# ---------------------------------------------------------------- training

@dataclass
class TrainConfig:
    steps: int = 500  # joint steps (language-model loss on answers)
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 30
    weight_decay: float = 0.01
    pool_size: int = 1024
    refresh_per_step: int = 24
    max_frames: int = 8
    distractors: float = 0.25
    grad_clip: float = 1.0
    # Curriculum: the first `short_steps` joint steps use at most `short_frames` frames.
    short_steps: int = 0
    short_frames: int = 2
    # Vision warm-up: `vision_steps` steps on `vision_batch` frames that train the
    # vision tower + connector with a throw-away linear head (max over each
    # frame's image tokens -> none/white/red/blue), so the image tokens already
    # say "square of colour c here" when the language model starts looking.
    vision_steps: int = 0
    vision_batch: int = 128
    vision_lr: float = 2e-3
    aux_weight: float = 0.0  # the same auxiliary loss during joint steps
    # "default": re-initialise every weight with mlx's own layer initialisers
    # (larger than the builder's N(0, 0.02)); "builder": keep the builder's.
    init: str = "builder"

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


class _Inputs:
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


class _FramePool:
    """Preprocessed frames by colour; part of it is replaced by fresh frames every step."""

    def __init__(self, inputs: _Inputs, rng: np.random.Generator, size: int):
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


def _make_batch(inputs: _Inputs, pool: _FramePool, rng: np.random.Generator, cfg: TrainConfig, max_frames: int):
    rows, weights, pixels, labels = [], [], [], []
    for b in range(cfg.batch_size):
        task = TASKS[b % 2]
        k = int(rng.integers(1, max_frames + 1))
        colours = random_colours(rng, task, k, distractors=cfg.distractors)
        prompt = inputs.prompt_ids[task, k]
        answer = inputs.answer_ids[answer_for(task, colours)]
        ids = prompt + answer
        rows.append(ids)
        w = np.zeros(len(ids), np.float32)
        w[len(prompt) - 1: len(ids) - 1] = 1.0  # positions whose next token is answer or eos
        weights.append(w)
        pixels.extend(pool.pick(c) for c in colours)
        labels.extend(colours)
    length = max(len(r) for r in rows)
    ids = np.full((len(rows), length), inputs.pad_id, np.int32)
    tgt = np.full((len(rows), length), inputs.pad_id, np.int32)
    wts = np.zeros((len(rows), length), np.float32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = r
        tgt[i, : len(r) - 1] = r[1:]
        wts[i, : len(r)] = weights[i]
    return ids, tgt, wts, np.stack(pixels)[None], np.asarray(labels, np.int32)


def labels_for(task: str) -> List[int]:
    """The labels of a task: highlights white / none, workout red / blue / none."""
    return [WHITE, NONE] if task == HIGHLIGHTS else [RED, BLUE, NONE]


def eval_sets(rng: np.random.Generator, image_size: int, count: int, task: str, n_frames: int,
              min_marked: int = 1, max_marked: Optional[int] = None, distractors: float = 0.25,
              size=None, label: Optional[int] = None) -> List[Tuple[list, str]]:
    """Frame sets (clips) with the expected answer, balanced over labels unless `label` is given."""
    labels = labels_for(task) if label is None else [label]
    out = []
    for i in range(count):
        label = labels[i % len(labels)]
        marked = None
        if label != NONE:
            hi = n_frames if max_marked is None else max_marked
            marked = int(rng.integers(min_marked, hi + 1))
        colours = random_colours(rng, task, n_frames, label=label, n_marked=marked, distractors=distractors)
        frames = render_clip(rng, colours, image_size, size=size)
        out.append((frames, answer_for(task, colours)))
    return out


def teacher_forced_accuracy(model, inputs: _Inputs, sets: Sequence[Tuple[list, str]], task: str,
                            batch_size: int = 32) -> float:
    """Share of sets whose greedy answer would be exactly the expected answer (one forward pass)."""
    import mlx.core as mx

    correct = 0
    for start in range(0, len(sets), batch_size):
        chunk = sets[start: start + batch_size]
        rows, pix, spans = [], [], []
        for frames, answer in chunk:
            prompt = inputs.prompt_ids[task, len(frames)]
            ans = inputs.answer_ids[answer]
            rows.append(prompt + ans)
            spans.append((len(prompt) - 1, ans))
            pix.append(inputs.pixels(frames))
        length = max(len(r) for r in rows)
        ids = np.full((len(rows), length), inputs.pad_id, np.int32)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
        logits = model(mx.array(ids), mx.array(np.concatenate(pix)[None])).logits
        pred = np.asarray(mx.argmax(logits, axis=-1))
        for i, (s, ans) in enumerate(spans):
            correct += int(pred[i, s: s + len(ans)].tolist() == ans)
    return correct / max(1, len(sets))


def _default_init(model, seed: int) -> None:
    """Give `model` the weights a fresh mlx module of the same class would get."""
    import mlx.core as mx

    mx.random.seed(seed)
    fresh = type(model)(model.config)
    mx.eval(fresh.parameters())
    model.update(fresh.parameters())


def _image_tokens(model, pixels):
    """Image tokens as get_input_embeddings makes them (all patches valid)."""
    pooler, *_ = model.vision_model(pixels.transpose(0, 2, 3, 1), output_hidden_states=True)
    return model.connector(pooler)


def train(model, processor, image_size: int, seed: int, cfg: TrainConfig,
          log: Optional[Callable[[str], None]] = None, eval_every: int = 0, eval_count: int = 64) -> dict:
    """Train `model` in place; returns a small report."""
    import mlx.core as mx
    import mlx.nn as nn
    import mlx.optimizers as optim
    from mlx.utils import tree_flatten

    log = log or (lambda message: None)
    started = time.perf_counter()
    rng = np.random.default_rng([seed, 8, 1])
    mx.random.seed(seed)
    if cfg.init == "default":
        _default_init(model, seed)
    inputs = _Inputs(model, processor, image_size, cfg.max_frames, rng)
    pool = _FramePool(inputs, rng, cfg.pool_size)
    log(f"inputs checked and pool of {cfg.pool_size} frames ready in {time.perf_counter() - started:.1f} s")

    class Trainable(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.aux = nn.Linear(model.config.text_config.hidden_size, 4)

    net = Trainable()

    def aux_loss(net, pixels, labels):
        logits = net.aux(_image_tokens(net.model, pixels)).max(axis=1)
        return nn.losses.cross_entropy(logits, labels, reduction="mean")

    def lm_loss(net, ids, positions, targets, pixels, labels):
        logits = net.model(ids, pixels).logits
        # only the positions that predict an answer token or the end token
        picked = logits.reshape(-1, logits.shape[-1])[positions]
        loss = nn.losses.cross_entropy(picked, targets, reduction="mean")
        if cfg.aux_weight:
            loss = loss + cfg.aux_weight * aux_loss(net, pixels[0], labels)
        return loss

    def schedule(lr, steps):
        warm = min(cfg.warmup, max(1, steps // 4))
        return optim.join_schedules(
            [optim.linear_schedule(lr * 0.05, lr, warm), optim.cosine_decay(lr, max(1, steps - warm), lr * 0.02)],
            [warm],
        )

    eval_sets_ = {}
    if eval_every:
        eval_rng = np.random.default_rng([seed, 8, 2])
        eval_sets_ = {(t, n): eval_sets(eval_rng, image_size, eval_count, t, n) for t in TASKS for n in (1, 8)}

    def report(step, losses):
        line = f"step {step} loss {np.mean(losses[-50:]):.4f} ({time.perf_counter() - started:.0f} s)"
        if eval_every and step % eval_every == 0:
            model.eval()
            line += " " + " ".join(
                f"{t[0]}{n}={teacher_forced_accuracy(model, inputs, s_, t):.2f}" for (t, n), s_ in eval_sets_.items()
            )
            model.train()
        log(line)

    model.train()
    # -- phase 1: vision warm-up
    if cfg.vision_steps:
        optimizer = optim.AdamW(learning_rate=schedule(cfg.vision_lr, cfg.vision_steps), weight_decay=cfg.weight_decay)
        value_and_grad = nn.value_and_grad(net, aux_loss)
        losses = []
        per = cfg.vision_batch // 4
        for step in range(cfg.vision_steps):
            labels = np.repeat(np.arange(4), per)
            pixels = np.stack([pool.pick(int(c)) for c in labels])
            loss, grads = value_and_grad(net, mx.array(pixels), mx.array(labels))
            grads, _ = optim.clip_grad_norm(grads, cfg.grad_clip)
            optimizer.update(net, grads)
            mx.async_eval(net.parameters(), optimizer.state, loss)
            pool.refresh(cfg.refresh_per_step)
            losses.append(float(loss))
            if (step + 1) % 50 == 0 or step + 1 == cfg.vision_steps:
                log(f"vision step {step + 1}/{cfg.vision_steps} aux loss {np.mean(losses[-50:]):.4f} "
                    f"({time.perf_counter() - started:.0f} s)")

    # -- phase 2: the product's prompts, answers and end token
    optimizer = optim.AdamW(learning_rate=schedule(cfg.lr, cfg.steps), weight_decay=cfg.weight_decay)
    value_and_grad = nn.value_and_grad(net, lm_loss)
    losses = []
    for step in range(cfg.steps):
        frames = cfg.short_frames if step < cfg.short_steps else cfg.max_frames
        ids, tgt, wts, pixels, labels = _make_batch(inputs, pool, rng, cfg, frames)
        positions = np.flatnonzero(wts.reshape(-1) > 0)
        loss, grads = value_and_grad(net, mx.array(ids), mx.array(positions.astype(np.int32)),
                                     mx.array(tgt.reshape(-1)[positions]), mx.array(pixels), mx.array(labels))
        if cfg.grad_clip:
            grads, _ = optim.clip_grad_norm(grads, cfg.grad_clip)
        optimizer.update(net, grads)
        mx.async_eval(net.parameters(), optimizer.state, loss)
        pool.refresh(cfg.refresh_per_step)  # numpy work while mlx computes
        losses.append(float(loss))
        if (step + 1) % 50 == 0 or step == 0:
            report(step + 1, losses)
    model.eval()
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    return {
        "train_seconds": round(time.perf_counter() - started, 1),
        "final_loss": float(np.mean(losses[-20:])) if losses else None,
        "parameter_count": int(n_params),
    }


def tokenizer_corpus() -> List[str]:
    """Extra tokenizer corpus for the marker preset: the prompts and answers, repeated."""
    lines = [*SYSTEM_PROMPTS.values(), *USER_PROMPTS.values(), "System: User: Assistant:",
             ANSWER_HIGH, ANSWER_LOW, *EXERCISE_ANSWERS.values()]
    return lines * 8


def train_checkpoint(out_dir, settings: dict, seed: int, log: Optional[Callable[[str], None]] = None) -> dict:
    """Load the freshly written checkpoint in out_dir, train it, overwrite its weights."""
    import mlx.core as mx
    from mlx.utils import tree_flatten
    from mlx_vlm import load

    out = Path(out_dir)
    model, processor = load(str(out))
    model.set_dtype(mx.float32)
    processor.image_processor.do_image_splitting = False
    cfg = TrainConfig.from_dict(settings["train"])
    report = train(model, processor, settings["vision"]["image_size"], seed, cfg, log=log)
    weights = dict(tree_flatten(model.parameters()))
    mx.eval(weights)
    tmp = out / "model.safetensors.tmp.safetensors"
    mx.save_safetensors(str(tmp), weights, metadata={"format": "mlx"})
    tmp.replace(out / "model.safetensors")
    return report
