"""What each preset builds, and the key that says when a cached checkpoint of it is still the one asked for.

``tiny``  text 64 hidden / 2 layers, vision 64 hidden / 2 layers, patch 16,
          image 64, scale_factor 2 -> image_seq_len 4, vocab 512 (~0.2 M params).
``marker`` text 128 hidden / 2 layers (2 heads, 1 kv head), vision 64 hidden /
          2 layers, patch 16, image 64, scale_factor 2, vocab 768 (~0.64 M
          params, 2.6 MB), trained with MLX on this CPU (tools/marker_training/,
          ~3 min on 2 cores) to answer the product's default prompts:
          highlights -> "Significance: 9/10" when any frame shows a solid white
          square with side >= 1/4 of the frame height, else "Significance: 2/10";
          workout -> "Exercise: squat" (red square), "Exercise: push-up" (blue),
          "Exercise: rest" (neither).  Its tokenizer corpus also holds the
          product prompts.  Its cache key also covers the training code and
          the prompts (see ``settings_hash``).
``full``  the shapes of HuggingFaceTB/SmolVLM2-500M-Video-Instruct:
          text (llama) hidden 960, 32 layers, 15 heads, 5 kv heads (head_dim 64),
          intermediate 2560, vocab 49280, rope_theta 100000, rms_norm_eps 1e-5,
          max_position_embeddings 8192; vision (SigLIP) hidden 768, 12 layers,
          12 heads, intermediate 3072, patch 16, image 512; scale_factor 4 ->
          image_seq_len 64.  About 0.5 B float32 parameters (~2 GB on disk).
          Numbers written from memory of the published config and checked against
          mlx_vlm's own defaults (smolvlm VisionConfig picks 12 layers / 3072 for
          hidden 768).  Least certain: max_position_embeddings (8192) and
          tie_word_embeddings (false) -- neither changes compute cost in mlx
          (mlx's LanguageModel always has its own lm_head).
"""
from __future__ import annotations

import hashlib
import json

# Part of every cache key: raise it when a change to this package changes the files it writes
# (the key hashes the training code itself, but not the builder's).
BUILDER_VERSION = 1

# The vision tower of the tiny and marker presets: the smallest SigLIP-shaped tower that loads.
_SMALL_VISION = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "patch_size": 16,
    "image_size": 64,
    "layer_norm_eps": 1e-6,
}

PRESETS: dict = {
    "tiny": {
        "text": {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "intermediate_size": 128,
            "rope_theta": 100000.0,
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 8192,
        },
        "vision": dict(_SMALL_VISION),
        "scale_factor": 2,
        "vocab_size": 512,
        "tokenizer_train_vocab": 512,
        "init_std": 0.02,
    },
    # Trained on the spot (tools/marker_training/) to see solid squares:
    # see the module docstring.
    "marker": {
        "text": {
            "hidden_size": 128,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,  # softmax (exp) over heads x L^2 dominates CPU training
            "num_key_value_heads": 1,
            "intermediate_size": 256,
            "rope_theta": 100000.0,
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 8192,
        },
        "vision": dict(_SMALL_VISION),
        "scale_factor": 2,
        "vocab_size": 768,
        "tokenizer_train_vocab": 768,
        # the product's prompts and answers join the tokenizer corpus, so a
        # prompt is ~75 tokens instead of ~200 (attention dominates training)
        "tokenizer_extra_corpus": "marker",
        "init_std": 0.02,
        "train": {
            "init": "default",
            "vision_steps": 60,
            "vision_batch": 128,
            "vision_lr": 2e-3,
            "steps": 300,
            "short_steps": 40,
            "short_frames": 2,
            "batch_size": 32,
            "lr": 1e-3,
            "warmup": 30,
            "weight_decay": 0.01,
            "aux_weight": 0.3,
            "pool_size": 1024,
            "refresh_per_step": 24,
            "max_frames": 8,
            "distractors": 0.25,
            "grad_clip": 1.0,
        },
    },
    "full": {
        "text": {
            "hidden_size": 960,
            "num_hidden_layers": 32,
            "num_attention_heads": 15,
            "num_key_value_heads": 5,
            "intermediate_size": 2560,
            "rope_theta": 100000.0,
            "rms_norm_eps": 1e-5,
            "max_position_embeddings": 8192,
        },
        "vision": {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "patch_size": 16,
            "image_size": 512,
            "layer_norm_eps": 1e-6,
        },
        "scale_factor": 4,
        "vocab_size": 49280,
        "tokenizer_train_vocab": 1024,
        "init_std": 0.02,
    },
}


def settings_for(preset: str) -> dict:
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}") from None


def settings_hash(preset: str) -> str:
    """Cache key part: builder version, preset settings and, for trained presets,
    a hash of the training code and the product prompts it trains on."""
    from tools import marker_training  # imports no mlx; only trained presets need it

    settings = settings_for(preset)
    key = {"builder_version": BUILDER_VERSION, "preset": settings}
    if "train" in settings or "tokenizer_extra_corpus" in settings:
        key["training_source"] = marker_training.source_hash()
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
