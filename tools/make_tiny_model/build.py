"""Building a checkpoint into a directory, and the cache that builds each preset once."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from tools.make_tiny_model.checkpoint_files import (WEIGHTS_FILE, image_seq_len, model_config, write_json,
                                                    write_processor_configs, write_tokenizer_files)
from tools.make_tiny_model.presets import BUILDER_VERSION, settings_for, settings_hash
from tools.make_tiny_model.tokenizer import BOS_TOKEN, EOU_TOKEN, IMAGE_TOKEN, PAD_TOKEN, build_tokenizer
from tools.make_tiny_model.weights import write_random_weights


def _extra_corpus(settings: dict) -> tuple:
    """The marker preset's tokenizer also learns the product's prompts and answers (shorter prompts)."""
    if settings.get("tokenizer_extra_corpus") == "marker":
        from tools import marker_training

        return tuple(marker_training.tokenizer_corpus())
    return ()


def build_checkpoint(out_dir, preset: str = "tiny", seed: int = 0, log=None) -> Path:
    """Write a complete checkpoint into out_dir (created if needed) and return it.

    Trained presets (``marker``) also train the weights; ``log`` (a callable
    taking a string) receives progress lines.
    """
    settings = settings_for(preset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tok = build_tokenizer(settings["tokenizer_train_vocab"], settings["vocab_size"], _extra_corpus(settings))
    ids = write_tokenizer_files(out, tok)
    config = model_config(settings, ids)
    write_json(out / "config.json", config)
    write_json(
        out / "generation_config.json",
        {
            "bos_token_id": ids[BOS_TOKEN],
            "eos_token_id": [ids[EOU_TOKEN]],
            "pad_token_id": ids[PAD_TOKEN],
        },
    )
    write_processor_configs(out, settings)
    n_params = write_random_weights(config, settings["init_std"], int(seed), out / WEIGHTS_FILE)
    training = None
    if "train" in settings:
        from tools import marker_training

        training = marker_training.train_checkpoint(out, settings, int(seed), log=log)
    write_json(
        out / "builder_info.json",
        {
            "builder": "tools.make_tiny_model",
            "builder_version": BUILDER_VERSION,
            "preset": preset,
            "seed": int(seed),
            "settings_hash": settings_hash(preset),
            "parameter_count": n_params,
            "image_seq_len": image_seq_len(settings),
            "image_token_id": ids[IMAGE_TOKEN],
            "eos_token_id": ids[EOU_TOKEN],
            **({"training": training} if training else {}),
        },
    )
    return out


def cached_checkpoint(cache_root, preset: str = "tiny", seed: int = 0, log=None) -> Path:
    """Build once into cache_root/<preset>-<seed>-<hash>, reuse when present.

    The build goes to a temporary sibling directory that is renamed into place,
    so a crashed build never looks complete; concurrent builders are safe (the
    loser discards its copy).
    """
    root = Path(cache_root)
    final = root / f"{preset}-{int(seed)}-{settings_hash(preset)}"
    if (final / "builder_info.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=root))
    try:
        build_checkpoint(tmp, preset=preset, seed=seed, log=log)
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "builder_info.json").is_file():
                raise
            # another process finished first; keep theirs
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
