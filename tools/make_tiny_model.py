"""Write a SmolVLM checkpoint (random, or trained on the spot) that the real mlx-vlm loads.

    python -m tools.make_tiny_model OUT_DIR [--preset tiny|marker|full] [--seed N]

The directory holds everything ``mlx_vlm.load(path)`` needs (config.json,
model.safetensors, tokenizer files, chat template, preprocessor/processor
configs) so tests and benchmarks run the real load / generate code paths with
no downloads.  For ``tiny`` and ``full`` the weights are random: the text they
generate is gibberish.  ``marker`` is trained on the spot to see squares.

Presets
-------
``tiny``  text 64 hidden / 2 layers, vision 64 hidden / 2 layers, patch 16,
          image 64, scale_factor 2 -> image_seq_len 4, vocab 512 (~0.2 M params).
``marker`` text 128 hidden / 2 layers (2 heads, 1 kv head), vision 64 hidden /
          2 layers, patch 16, image 64, scale_factor 2, vocab 768 (~0.64 M
          params, 2.6 MB), trained with MLX on this CPU (tools/marker_training.py,
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

The tokenizer is a small byte-level BPE trained with ``tokenizers`` on a fixed
built-in corpus, then padded with unreachable ``<|reserved_N|>`` entries up to
the config's ``vocab_size`` (so every id the random model can emit decodes --
mlx-vlm's BPEStreamingDetokenizer indexes a list of len(tokenizer.vocab) and
would raise IndexError on ids past the tokenizer).

Same preset + seed -> bit-identical model.safetensors and tokenizer.json
(also for the trained ``marker`` preset).

After ``model, processor = mlx_vlm.load(path)`` callers should still set
``processor.image_processor.do_image_splitting = False`` (the files already say
so; this just guards against other checkpoints), and build prompts with
``mlx_vlm.prompt_utils.apply_chat_template(processor, model.config, text,
num_images=n)``.  Generation stops on ``<end_of_utterance>`` (config eos);
``generate`` returns a GenerationResult whose ``.text`` is the string.

Importing this module does not import mlx, so callers can preload OpenBLAS
(see ``preload_openblas``) before mlx is first imported.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from video_analysis.model.openblas import preload_openblas  # noqa: E402  (callers use it before mlx is first imported)

BUILDER_VERSION = 1

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
        "vision": {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "patch_size": 16,
            "image_size": 64,
            "layer_norm_eps": 1e-6,
        },
        "scale_factor": 2,
        "vocab_size": 512,
        "tokenizer_train_vocab": 512,
        "init_std": 0.02,
    },
    # Trained on the spot (tools/marker_training.py) to see solid squares:
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
        "vision": {
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "intermediate_size": 128,
            "patch_size": 16,
            "image_size": 64,
            "layer_norm_eps": 1e-6,
        },
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

WEIGHTS_FILE = "model.safetensors"

# Special tokens, in id order (ids 0..len-1 of the trained tokenizer).
UNK_TOKEN = "<|endoftext|>"
BOS_TOKEN = "<|im_start|>"
PAD_TOKEN = "<|im_end|>"
FAKE_IMAGE_TOKEN = "<fake_token_around_image>"
IMAGE_TOKEN = "<image>"
GLOBAL_IMAGE_TOKEN = "<global-img>"
EOU_TOKEN = "<end_of_utterance>"
VIDEO_TOKEN = "<video>"
ROW_COL_TOKENS = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
SPECIAL_TOKENS = [
    UNK_TOKEN,
    BOS_TOKEN,
    PAD_TOKEN,
    FAKE_IMAGE_TOKEN,
    IMAGE_TOKEN,
    GLOBAL_IMAGE_TOKEN,
    EOU_TOKEN,
    VIDEO_TOKEN,
    *ROW_COL_TOKENS,
]

# SmolVLM2's template ("<|im_start|>User:<image>...text<end_of_utterance>\nAssistant:"),
# extended to accept plain-string content and empty content lists.
CHAT_TEMPLATE = (
    "<|im_start|>"
    "{% for message in messages %}"
    "{{ message['role'] | capitalize }}"
    "{% if message['content'] is string %}"
    "{{ ': ' + message['content'] }}"
    "{% else %}"
    "{% if message['content'] and message['content'][0]['type'] == 'image' %}"
    "{{ ':' }}{% else %}{{ ': ' }}{% endif %}"
    "{% for line in message['content'] %}"
    "{% if line['type'] == 'text' %}{{ line['text'] }}"
    "{% elif line['type'] == 'image' %}{{ '<image>' }}"
    "{% elif line['type'] == 'video' %}{{ '<video>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "<end_of_utterance>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
)

# ---------------------------------------------------------------- tokenizer

def _corpus() -> list[str]:
    """Fixed English corpus for the tokenizer (deterministic, no I/O)."""
    base = [
        "Describe the video.",
        "Describe this video segment in one sentence.",
        "Describe what happens in the video segment.",
        "You are a helpful assistant that watches video and answers briefly.",
        "Rate the significance of this segment from 0 to 10.",
        "Answer with the format Significance: N/10 and nothing else.",
        "The video shows a person doing a squat exercise in a gym.",
        "A person does a push-up on the floor, then takes a rest.",
        "The athlete performs squats, push-ups, lunges and a plank.",
        "Exercise: squat. Reps: 12. Sets: 3. Rest: 60 seconds.",
        "Exercise: push-up. Reps: 10. Sets: 2. Rest: 30 seconds.",
        "The person is resting between sets and drinking water.",
        "Nothing important happens in this segment; the scene is static.",
        "A white square appears in the frame. The frame is dark.",
        "A red square and a blue square move across the frame.",
        "The camera shows a kitchen, a street, a park and a room.",
        "Highlights: the most significant moment is the jump at the end.",
        "The score is high because the action is clear and important.",
        "The score is low because nothing happens in the video.",
        "Summary: the video has several segments with different activity.",
        "Frame, frames, segment, segments, clip, scene, timestamp, second, minute.",
        "Count the number of repetitions of the exercise in the video.",
        "The person stands up, bends the knees, and lowers the body.",
        "Keep the back straight and the core tight during the squat.",
        "Yes. No. Maybe. Unknown. None. Other. Red. Blue. Green. White. Black.",
        "Question: what is the person doing? Answer: exercising.",
        "Question: is there a square? Answer: yes, a white square.",
    ]
    lines = list(base)
    for n in range(11):
        lines.append(f"Significance: {n}/10")
        lines.append(f"Score: {n}/10")
        lines.append(f"Significance: {n}/10. Score: {n}/10.")
    for n in range(0, 100):
        lines.append(f"{n} {n * 7 % 100} {n}/10 {n}:{n * 3 % 60:02d} {n}.{n % 10}")
    return lines * 4


def _build_tokenizer(train_vocab: int, vocab_size: int, extra_corpus: tuple = ()):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=min(train_vocab, vocab_size),
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus() + list(extra_corpus), trainer)

    # Pad the BPE vocab up to vocab_size with unreachable entries so every id
    # the model can produce decodes to something.
    data = json.loads(tok.to_str())
    vocab = data["model"]["vocab"]
    used = set(vocab.values()) | {t["id"] for t in data["added_tokens"]}
    next_id = max(used) + 1
    i = 0
    while next_id < vocab_size:
        name = f"<|reserved_{i}|>"
        i += 1
        if name in vocab:
            continue
        vocab[name] = next_id
        next_id += 1
    if next_id > vocab_size:
        raise ValueError(f"tokenizer has {next_id} entries > vocab_size {vocab_size}")
    tok = Tokenizer.from_str(json.dumps(data))
    assert tok.get_vocab_size(with_added_tokens=True) == vocab_size
    return tok


def _write_tokenizer_files(out: Path, tok) -> dict:
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    (out / "tokenizer.json").write_text(tok.to_str(pretty=True), encoding="utf-8")
    added = {
        str(ids[t]): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    }
    extra = [t for t in SPECIAL_TOKENS if t not in (UNK_TOKEN, BOS_TOKEN, PAD_TOKEN, EOU_TOKEN)]
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "processor_class": "SmolVLMProcessor",
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "bos_token": BOS_TOKEN,
        "eos_token": EOU_TOKEN,
        "pad_token": PAD_TOKEN,
        "unk_token": UNK_TOKEN,
        "additional_special_tokens": extra,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 8192,
        "chat_template": CHAT_TEMPLATE,
    }
    _dump(out / "tokenizer_config.json", tok_cfg)
    _dump(
        out / "special_tokens_map.json",
        {
            "bos_token": BOS_TOKEN,
            "eos_token": EOU_TOKEN,
            "pad_token": PAD_TOKEN,
            "unk_token": UNK_TOKEN,
            "additional_special_tokens": extra,
        },
    )
    _dump(out / "chat_template.json", {"chat_template": CHAT_TEMPLATE})
    return ids


# ---------------------------------------------------------------- configs

def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def image_seq_len(settings: dict) -> int:
    v = settings["vision"]
    patches = (v["image_size"] // v["patch_size"]) ** 2
    return patches // (settings["scale_factor"] ** 2)


def _model_config(settings: dict, ids: dict) -> dict:
    t, v = settings["text"], settings["vision"]
    vocab = settings["vocab_size"]
    text_config = {
        "model_type": "llama",
        "architectures": ["VLlama3ForCausalLM"],
        **t,
        "head_dim": t["hidden_size"] // t["num_attention_heads"],
        "vocab_size": vocab,
        "rope_traditional": False,
        "tie_word_embeddings": False,
        "bos_token_id": ids[BOS_TOKEN],
        "eos_token_id": ids[EOU_TOKEN],
        "pad_token_id": ids[PAD_TOKEN],
        "torch_dtype": "float32",
    }
    vision_config = {
        "model_type": "smolvlm_vision",
        **v,
        "num_channels": 3,
        "hidden_act": "gelu_pytorch_tanh",
    }
    return {
        "architectures": ["SmolVLMForConditionalGeneration"],
        "model_type": "smolvlm",
        "image_token_id": ids[IMAGE_TOKEN],
        "scale_factor": settings["scale_factor"],
        "vocab_size": vocab,
        "bos_token_id": ids[BOS_TOKEN],
        "eos_token_id": ids[EOU_TOKEN],
        "pad_token_id": ids[PAD_TOKEN],
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "text_config": text_config,
        "vision_config": vision_config,
    }


def _processor_configs(out: Path, settings: dict) -> None:
    size = settings["vision"]["image_size"]
    _dump(
        out / "preprocessor_config.json",
        {
            "image_processor_type": "SmolVLMImageProcessor",
            "processor_class": "SmolVLMProcessor",
            "do_convert_rgb": True,
            "do_image_splitting": False,
            "do_normalize": True,
            "do_pad": True,
            "do_rescale": True,
            "do_resize": True,
            "image_mean": [0.5, 0.5, 0.5],
            "image_std": [0.5, 0.5, 0.5],
            "max_image_size": {"longest_edge": size},
            "size": {"longest_edge": size},
            "resample": 1,
            "rescale_factor": 1 / 255,
            "video_sampling": {
                "fps": 1,
                "max_frames": 64,
                "video_size": {"longest_edge": size},
            },
        },
    )
    _dump(
        out / "processor_config.json",
        {"processor_class": "SmolVLMProcessor", "image_seq_len": image_seq_len(settings)},
    )


# ---------------------------------------------------------------- weights

def _build_weights(config: dict, init_std: float, seed: int, path: Path) -> int:
    import mlx.core as mx
    from mlx.utils import tree_flatten, tree_unflatten
    from mlx_vlm.models import smolvlm

    model_config = smolvlm.ModelConfig.from_dict(config)
    model_config.text_config = smolvlm.TextConfig.from_dict(config["text_config"])
    model_config.vision_config = smolvlm.VisionConfig.from_dict(config["vision_config"])
    model = smolvlm.Model(model_config)  # parameters are lazy: nothing computed yet

    mx.random.seed(seed)
    flat = tree_flatten(model.parameters())
    keys = mx.random.split(mx.random.key(seed), len(flat))
    new = []
    count = 0
    for i, (name, p) in enumerate(flat):
        if p.ndim == 1:
            # norms -> 1, biases -> 0 (vision attention / MLP / LayerNorm biases)
            val = mx.zeros(p.shape, mx.float32) if name.endswith("bias") else mx.ones(p.shape, mx.float32)
        else:
            val = mx.random.normal(p.shape, dtype=mx.float32, key=keys[i]) * init_std
        mx.eval(val)  # materialise one tensor at a time to bound memory
        new.append((name, val))
        count += val.size
    model.update(tree_unflatten(new))
    weights = dict(tree_flatten(model.parameters()))
    del flat, new, model
    mx.save_safetensors(str(path), weights, metadata={"format": "mlx"})
    return count


# ---------------------------------------------------------------- public API

def _settings(preset: str) -> dict:
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}") from None


def _marker_training():
    """tools/marker_training.py, also when this file runs as a script."""
    from tools import marker_training

    return marker_training


def _extra_corpus(settings: dict) -> tuple:
    if settings.get("tokenizer_extra_corpus") == "marker":
        return tuple(_marker_training().tokenizer_corpus())
    return ()


def settings_hash(preset: str) -> str:
    """Cache key part: builder version, preset settings and, for trained presets,
    a hash of the training code and the product prompts it trains on."""
    settings = _settings(preset)
    key = {"builder_version": BUILDER_VERSION, "preset": settings}
    if "train" in settings or "tokenizer_extra_corpus" in settings:
        key["training_source"] = _marker_training().source_hash()
    blob = json.dumps(key, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def build_checkpoint(out_dir, preset: str = "tiny", seed: int = 0, log=None) -> Path:
    """Write a complete checkpoint into out_dir (created if needed) and return it.

    Trained presets (``marker``) also train the weights; ``log`` (a callable
    taking a string) receives progress lines.
    """
    settings = _settings(preset)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tok = _build_tokenizer(settings["tokenizer_train_vocab"], settings["vocab_size"], _extra_corpus(settings))
    ids = _write_tokenizer_files(out, tok)
    config = _model_config(settings, ids)
    _dump(out / "config.json", config)
    _dump(
        out / "generation_config.json",
        {
            "bos_token_id": ids[BOS_TOKEN],
            "eos_token_id": [ids[EOU_TOKEN]],
            "pad_token_id": ids[PAD_TOKEN],
        },
    )
    _processor_configs(out, settings)
    n_params = _build_weights(config, settings["init_std"], int(seed), out / WEIGHTS_FILE)
    training = None
    if "train" in settings:
        training = _marker_training().train_checkpoint(out, settings, int(seed), log=log)
    _dump(
        out / "builder_info.json",
        {
            "builder": "tools/make_tiny_model.py",
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir")
    ap.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cached", action="store_true",
                    help="treat OUT_DIR as a cache root: reuse the checkpoint there, build it only when missing; "
                         "prints only its path on stdout")
    args = ap.parse_args(argv)
    preload_openblas()
    t0 = time.perf_counter()
    if args.cached:
        log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
        out = cached_checkpoint(args.out_dir, preset=args.preset, seed=args.seed, log=log)
        print(out.resolve())
        return 0
    log = (lambda message: print(message, flush=True)) if "train" in PRESETS[args.preset] else None
    out = build_checkpoint(args.out_dir, preset=args.preset, seed=args.seed, log=log)
    dt = time.perf_counter() - t0
    print(f"{out.resolve()}  preset={args.preset} seed={args.seed}  built in {dt:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
