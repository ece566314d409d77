"""The tiny SmolVLM checkpoint builder: real mlx_vlm load/generate, determinism, caching."""

import hashlib
import os
from pathlib import Path

import pytest

from tools import make_tiny_model as mtm  # noqa: E402  (does not import mlx)
from tools.make_tiny_model import build as mtm_build  # noqa: E402  (where cached_checkpoint finds its helpers)

mtm.preload_openblas()  # before mlx is imported (no-op if absent / already loaded)

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return mtm.build_checkpoint(tmp_path_factory.mktemp("tiny") / "ckpt", preset="tiny", seed=0)


@pytest.fixture(scope="module")
def loaded(tiny_dir):
    from mlx_vlm import load

    model, processor = load(str(tiny_dir))
    processor.image_processor.do_image_splitting = False
    return model, processor


def _frames(n=8, size=64, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_files_and_config(tiny_dir):
    import json

    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.json",
        "preprocessor_config.json",
        "processor_config.json",
        "builder_info.json",
    ):
        assert (tiny_dir / name).is_file(), name
    cfg = json.loads((tiny_dir / "config.json").read_text())
    info = json.loads((tiny_dir / "builder_info.json").read_text())
    assert cfg["model_type"] == "smolvlm"
    assert cfg["vision_config"]["model_type"] == "smolvlm_vision"
    assert cfg["image_token_id"] == info["image_token_id"]
    assert json.loads((tiny_dir / "processor_config.json").read_text())["image_seq_len"] == 4
    assert info["preset"] == "tiny" and info["seed"] == 0 and info["parameter_count"] > 0


def test_load_and_generate(loaded):
    from mlx_vlm import generate
    from mlx_vlm.prompt_utils import apply_chat_template

    model, processor = loaded
    messages = [
        {"role": "system", "content": "You rate video segments."},
        {"role": "user", "content": "Describe the video. Significance: ?/10"},
    ]
    prompt = apply_chat_template(processor, model.config, messages, num_images=8)
    assert prompt.startswith("<|im_start|>System: You rate video segments.<end_of_utterance>\n")
    assert "User:" + "<image>" * 8 + "Describe the video." in prompt
    assert prompt.endswith("<end_of_utterance>\nAssistant:")

    result = generate(model, processor, prompt, image=_frames(), max_tokens=16, temperature=0.0)
    assert isinstance(result.text, str)
    assert 1 <= result.generation_tokens <= 16
    # 8 frames x (image_seq_len 4 + <fake>, <global-img>, <fake>) plus the text
    assert result.prompt_tokens > 8 * (4 + 3)

    again = generate(model, processor, prompt, image=_frames(), max_tokens=16, temperature=0.0)
    assert again.text == result.text  # greedy decoding is repeatable


def test_eos_stops_generation(tiny_dir):
    import mlx.core as mx
    import mlx.nn as nn
    from mlx_vlm import generate, load
    from mlx_vlm.prompt_utils import apply_chat_template

    model, processor = load(str(tiny_dir))
    processor.image_processor.do_image_splitting = False
    eos = processor.tokenizer.convert_tokens_to_ids("<end_of_utterance>")
    assert eos in np.atleast_1d(model.config.eos_token_id).tolist()
    # make the model always predict <end_of_utterance>
    lm = model.language_model
    head = nn.Linear(lm.lm_head.weight.shape[1], lm.lm_head.weight.shape[0], bias=True)
    head.weight = mx.zeros_like(head.weight)
    head.bias = mx.zeros_like(head.bias).at[eos].add(10.0)
    lm.lm_head = head
    prompt = apply_chat_template(processor, model.config, "Describe the video.", num_images=2)
    result = generate(model, processor, prompt, image=_frames(2), max_tokens=16, temperature=0.0)
    assert result.text == ""
    assert result.finish_reason == "stop"


def test_same_seed_identical_other_seed_differs(tmp_path):
    a = mtm.build_checkpoint(tmp_path / "a", seed=0)
    b = mtm.build_checkpoint(tmp_path / "b", seed=0)
    c = mtm.build_checkpoint(tmp_path / "c", seed=1)
    w = mtm.WEIGHTS_FILE
    assert (a / w).read_bytes() == (b / w).read_bytes()
    assert _sha(a / w) != _sha(c / w)
    assert (a / "tokenizer.json").read_bytes() == (b / "tokenizer.json").read_bytes()


def test_cached_checkpoint_reused(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    p1 = mtm.cached_checkpoint(root, preset="tiny", seed=0)
    assert p1.parent == root and p1.name.startswith("tiny-0-")
    mtime = (p1 / mtm.WEIGHTS_FILE).stat().st_mtime_ns

    def _no_rebuild(*a, **k):
        raise AssertionError("cached_checkpoint rebuilt an existing checkpoint")

    monkeypatch.setattr(mtm_build, "build_checkpoint", _no_rebuild)
    p2 = mtm.cached_checkpoint(root, preset="tiny", seed=0)
    assert p2 == p1
    assert (p2 / mtm.WEIGHTS_FILE).stat().st_mtime_ns == mtime
    assert sorted(os.listdir(root)) == [p1.name]  # no temp dirs left behind


def test_crashed_build_never_looks_complete(tmp_path, monkeypatch):
    root = tmp_path / "cache"

    def _boom(*a, **k):
        raise RuntimeError("simulated crash while writing weights")

    monkeypatch.setattr(mtm_build, "write_random_weights", _boom)
    with pytest.raises(RuntimeError):
        mtm.cached_checkpoint(root, preset="tiny", seed=3)
    assert not any(p.name.startswith("tiny-3-") for p in root.iterdir())
    assert list(root.iterdir()) == []
