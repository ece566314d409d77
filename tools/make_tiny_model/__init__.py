"""Write a SmolVLM checkpoint (random, or trained on the spot) that the real mlx-vlm loads.

    python -m tools.make_tiny_model OUT_DIR [--preset tiny|marker|full] [--seed N] [--cached]

The directory holds everything ``mlx_vlm.load(path)`` needs (config.json,
model.safetensors, tokenizer files, chat template, preprocessor/processor
configs) so tests and benchmarks run the real load / generate code paths with
no downloads.  For ``tiny`` and ``full`` the weights are random: the text they
generate is gibberish.  ``marker`` is trained on the spot to see squares.

Same preset + seed -> bit-identical model.safetensors and tokenizer.json
(also for the trained ``marker`` preset).

After ``model, processor = mlx_vlm.load(path)`` callers should still set
``processor.image_processor.do_image_splitting = False`` (the files already say
so; this just guards against other checkpoints), and build prompts with
``mlx_vlm.prompt_utils.apply_chat_template(processor, model.config, text,
num_images=n)``.  Generation stops on ``<end_of_utterance>`` (config eos);
``generate`` returns a GenerationResult whose ``.text`` is the string.

The modules: ``presets`` (what each preset builds, the cache key),
``tokenizer`` (a small BPE and the chat template), ``checkpoint_files``
(config.json, processor and tokenizer files), ``weights`` (random weights),
``build`` (a checkpoint into a directory; the cache); the marker preset's
training is ``tools.marker_training``.

Importing this package does not import mlx, so callers can preload OpenBLAS
(see ``preload_openblas``) before mlx is first imported.
"""
from __future__ import annotations

from tools.make_tiny_model.build import build_checkpoint, cached_checkpoint
from tools.make_tiny_model.checkpoint_files import WEIGHTS_FILE, image_seq_len
from tools.make_tiny_model.presets import BUILDER_VERSION, PRESETS, settings_hash
# Callers preload OpenBLAS before mlx is first imported; checkpoints are built on it.
from video_analysis.model.openblas import preload_openblas

__all__ = ["BUILDER_VERSION", "PRESETS", "WEIGHTS_FILE", "build_checkpoint", "cached_checkpoint", "image_seq_len",
           "preload_openblas", "settings_hash"]
