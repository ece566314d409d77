"""Random weights for a checkpoint's config, written one tensor at a time."""
from __future__ import annotations

from pathlib import Path


def write_random_weights(config: dict, init_std: float, seed: int, path: Path) -> int:
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
