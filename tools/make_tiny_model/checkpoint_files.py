"""The checkpoint's JSON files: config.json, the processor configs and the tokenizer's own files."""
from __future__ import annotations

import json
from pathlib import Path

from tools.make_tiny_model.tokenizer import (BOS_TOKEN, CHAT_TEMPLATE, EOU_TOKEN, IMAGE_TOKEN, PAD_TOKEN,
                                             SPECIAL_TOKENS, UNK_TOKEN)

WEIGHTS_FILE = "model.safetensors"


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def image_seq_len(settings: dict) -> int:
    v = settings["vision"]
    patches = (v["image_size"] // v["patch_size"]) ** 2
    return patches // (settings["scale_factor"] ** 2)


def model_config(settings: dict, ids: dict) -> dict:
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


def write_processor_configs(out: Path, settings: dict) -> None:
    size = settings["vision"]["image_size"]
    write_json(
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
    write_json(
        out / "processor_config.json",
        {"processor_class": "SmolVLMProcessor", "image_seq_len": image_seq_len(settings)},
    )


def write_tokenizer_files(out: Path, tok) -> dict:
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
    write_json(out / "tokenizer_config.json", tok_cfg)
    write_json(
        out / "special_tokens_map.json",
        {
            "bos_token": BOS_TOKEN,
            "eos_token": EOU_TOKEN,
            "pad_token": PAD_TOKEN,
            "unk_token": UNK_TOKEN,
            "additional_special_tokens": extra,
        },
    )
    write_json(out / "chat_template.json", {"chat_template": CHAT_TEMPLATE})
    return ids
