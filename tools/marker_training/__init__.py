"""Frames, prompts and the MLX training loop behind ``python -m tools.make_tiny_model --preset marker``.

The marker model is a small SmolVLM trained on this machine, in a few
minutes, to answer the product's own prompts about solid squares:

* highlights prompts (``prompts.HIGHLIGHTS_SYSTEM`` / ``HIGHLIGHTS_USER``):
  ``Significance: 9/10`` when any frame shows a solid white square whose side
  is at least a quarter of the frame height, else ``Significance: 2/10``;
* workout prompts (``prompts.WORKOUT_SYSTEM`` / ``WORKOUT_USER``):
  ``Exercise: squat`` for a red square, ``Exercise: push-up`` for a blue one,
  ``Exercise: rest`` when there is neither.

Training inputs are built exactly as the product builds inference inputs:
the messages of ``video_analysis.model.runner`` (system + user), ``apply_chat_template``
with ``num_images``, and the checkpoint's own processor (its image processor
turns every frame into pixel values; the prompt's token ids come from
``mlx_vlm.utils.prepare_inputs`` on the rendered prompt).  Before training,
composed examples are checked bit for bit against ``prepare_inputs`` on the
same frames.  Frames are shrunk the way the product's frame reader does it
(longest edge = model image size, ``cv2.INTER_AREA``, aspect kept) before
the processor squashes them to a square.  The loss covers the answer tokens and the closing
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
Importing this package does not import mlx.

The modules, in the order training uses them:

* ``scenes``: the random moving backgrounds;
* ``frames``: squares of a colour on a scene, the damage of video coding,
  the product's resize; one frame or a clip of a moving scene;
* ``tasks``: the product's prompts, the answers, example frame sets and
  the tokenizer corpus;
* ``inputs``: token ids and pixel values as the product makes them, checked
  against ``prepare_inputs``; a pool of preprocessed frames;
* ``loop``: the training loop and ``train_checkpoint``.
"""

from __future__ import annotations

import hashlib
import inspect
from pathlib import Path

from tools import synthetic_video
from tools.marker_training.loop import train_checkpoint
from tools.marker_training.tasks import (HIGHLIGHTS, SYSTEM_PROMPTS, TASKS, USER_PROMPTS, WORKOUT, eval_sets,
                                         labels_for, tokenizer_corpus)

__all__ = ["HIGHLIGHTS", "WORKOUT", "TASKS", "eval_sets", "labels_for", "source_hash", "tokenizer_corpus",
           "train_checkpoint"]


def source_hash() -> str:
    """Hash of every module training runs (this package and synthetic_video's `background`, the one
    function of it training draws) and of the product prompts it trains on: part of the checkpoint cache
    key, so a change to any of them retrains, and a change elsewhere in synthetic_video (new test
    scenes) does not."""
    modules = sorted(Path(__file__).parent.glob("*.py"))
    blob = b"".join(path.name.encode() + b"\0" + path.read_bytes() + b"\0" for path in modules)
    blob += inspect.getsource(synthetic_video.background).encode() + b"\0"
    blob += repr((SYSTEM_PROMPTS, USER_PROMPTS)).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
