"""Softmax and GELU for the vision tower without mlx's slow `exp` and `tanh` on CPU.

Why: mlx's CPU backend evaluates `exp` and `tanh` one float at a time
(≈12 and ≈25 ns per float on these machines) while `power(2, x)` is about
2× faster than `exp` and multiplies and adds are ~20× faster. SmolVLM's
vision tower computes a 1 024 × 1 024 softmax per head per frame and a GELU
over 3 072 features per patch, so these two functions dominate its time. Both
are rewritten with powers of two, which is the same mathematics:

- softmax: e^s = 2^(s·log2 e); log2 e is folded into the query scale (the
  scores come out of the matrix multiply already in base 2), and the division
  by the row sum is done after multiplying by V (on L × 64 instead of L × L).
- GELU, tanh approximation (SigLIP's `gelu_pytorch_tanh`):
  ½x(1 + tanh y) = x / (1 + e^(−2y)) = x / (1 + 2^(−2y·log2 e)).

Outputs differ from mlx's own functions by float rounding only (≈1e-6
relative; the tests compare them). Measured on a 2-core Xeon, 4 frames of
512²: softmax 693 -> 536 ms, GELU 313 -> 104 ms per layer.
`FAST_ACTIVATIONS=0` turns it off.
"""
from __future__ import annotations

import math
from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from video_analysis.config import Config

_LOG2_E = 1.0 / math.log(2.0)
_GELU_TANH_SCALE = math.sqrt(2.0 / math.pi)


def gelu_tanh_base2(x: mx.array) -> mx.array:
    """GELU, tanh approximation, as x / (1 + 2^(−2·√(2/π)·(x + 0.044715x³)·log2 e))."""
    inner = x + 0.044715 * (x * x * x)
    return x / (1.0 + mx.power(2.0, (-2.0 * _GELU_TANH_SCALE * _LOG2_E) * inner))


class GeluTanhBase2(nn.Module):
    """Drop-in for nn.GELU(approx="precise"/"tanh")."""

    def __call__(self, x: mx.array) -> mx.array:
        return gelu_tanh_base2(x)


class AttentionBase2(nn.Module):
    """Drop-in for mlx-vlm's VisionAttention (same projections, base-2 softmax).

    Keeps the wrapped module's weights; a call with a mask goes to the
    original (the vision tower calls it without one).
    """

    def __init__(self, attention: nn.Module):
        super().__init__()
        self.inner = attention

    def __call__(self, x: mx.array, mask: Optional[mx.array] = None) -> mx.array:
        inner = self.inner
        if mask is not None:
            return inner(x, mask)
        batch, length, _ = x.shape
        heads = inner.num_heads

        def split_heads(projected: mx.array) -> mx.array:
            return projected.reshape(batch, length, heads, -1).transpose(0, 2, 1, 3)

        queries = split_heads(inner.q_proj(x) * (inner.scale * _LOG2_E))
        keys = split_heads(inner.k_proj(x))
        values = split_heads(inner.v_proj(x))
        scores = queries @ keys.swapaxes(-1, -2)
        weights = mx.power(2.0, scores - scores.max(axis=-1, keepdims=True))
        # Normalise after multiplying by V: L × head_dim divisions instead of L × L.
        output = (weights @ values) / weights.sum(axis=-1, keepdims=True)
        return inner.out_proj(output.transpose(0, 2, 1, 3).reshape(batch, length, -1))


def enable(vision_model: nn.Module) -> int:
    """Swap in the base-2 attention and GELU in every encoder layer; returns layers changed.

    Only layers shaped like mlx-vlm's SigLIP-style encoder layer (self_attn with
    q/k/v/out projections, an MLP whose activation is the tanh GELU) change;
    model/loading.py calls it for SmolVLM/Idefics3 models only.
    """
    if not Config.from_env().FAST_ACTIVATIONS:
        return 0
    encoder = getattr(vision_model, "encoder", None)
    changed = 0
    for layer in getattr(encoder, "layers", []):
        attention, mlp = getattr(layer, "self_attn", None), getattr(layer, "mlp", None)
        activation = getattr(mlp, "activation_fn", None)
        if not (_is_plain_attention(attention) and isinstance(activation, nn.GELU)
                and getattr(activation, "_approx", None) in ("precise", "tanh")):
            continue
        layer.self_attn = AttentionBase2(attention)
        mlp.activation_fn = GeluTanhBase2()
        changed += 1
    return changed


def _is_plain_attention(module) -> bool:
    return all(hasattr(module, name) for name in ("q_proj", "k_proj", "v_proj", "out_proj", "num_heads", "scale"))
