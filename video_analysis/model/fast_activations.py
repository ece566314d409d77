"""Softmax and GELU for the vision tower without mlx's slow `exp` and `tanh` on CPU.

Why: mlx's CPU backend evaluates `exp` and `tanh` one float at a time
(≈12 and ≈25 ns per float on these machines) while `power(2, x)` is about
2× faster than `exp` and multiplies and adds are ~20× faster. SmolVLM's
vision tower computes a 1 024 × 1 024 softmax per head per frame and a GELU
over 3 072 features per patch, so these two functions dominate its time. Both
are rewritten with powers of two, which is the same mathematics:

- softmax: e^s = 2^(s·log2 e); log2 e is folded into the query scale (the
  scores come out of the matrix multiply already in base 2), each row's
  shift rides in that multiply as one more column instead of two passes for
  the row's maximum (`row_shift`, guarded by `ExactIfOverflow`), and the
  division by the row sum is done after multiplying by V (on L × 64 instead
  of L × L).
- GELU, tanh approximation (SigLIP's `gelu_pytorch_tanh`):
  ½x(1 + tanh y) = x / (1 + e^(−2y)) = x / (1 + 2^(−2y·log2 e)).

Outputs differ from mlx's own functions by float rounding only (≈1e-6
relative; the tests compare them). Measured on a 2-core Xeon, 4 frames of
512²: softmax 693 -> 536 ms, GELU 313 -> 104 ms per layer.
`FAST_ACTIVATIONS=0` turns it off.
"""
from __future__ import annotations

import logging
import math
from typing import Optional

import mlx.core as mx
import mlx.nn as nn

from video_analysis.config import Config
from video_analysis.model.parallel_vision import first_array

log = logging.getLogger(__name__)

_LOG2_E = 1.0 / math.log(2.0)
_LEAST_LARGEST_EXPONENT = 32.0  # a row's largest weight is at least 2^-32 (row_shift)
_LONGEST_KEYS = 16  # keys whose scores row_shift computes for its lower bound
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
        self.exact_row_max = False  # True: the classic shift by each row's maximum (ExactIfOverflow)

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
        if self.exact_row_max:
            scores = queries @ keys.swapaxes(-1, -2)
            weights = mx.power(2.0, scores - scores.max(axis=-1, keepdims=True))
            total = weights.sum(axis=-1, keepdims=True)
        else:
            weights = mx.power(2.0, scores_minus_shift(queries, keys, row_shift(queries, keys)))
            total = weights.sum(axis=-1, keepdims=True)
            # Finite weights may still add up past float32: x / inf would be a silent 0, NaN is caught.
            total = mx.where(mx.isinf(total), mx.nan, total)
        # Normalise after multiplying by V: L × head_dim divisions instead of L × L.
        output = (weights @ values) / total
        return inner.out_proj(output.transpose(0, 2, 1, 3).reshape(batch, length, -1))


def row_shift(queries: mx.array, keys: mx.array) -> mx.array:
    """What to subtract from each row of base-2 scores so that 2^score stays finite, without the L × L scores.

    Softmax is the same whatever is subtracted from a row; the row's maximum is
    the usual choice, but finding it and subtracting it are two more passes
    over L × L scores (a quarter of the attention's time). This shift is the
    smaller of
    - an upper bound on the row's scores (Cauchy-Schwarz, and per dimension
      with the keys' extremes): when it is the smaller, no weight exceeds 1;
    - a lower bound on the row's maximum + 32: when that is the smaller, the
      largest weight is at least 2^-32, so weights turn subnormal (slow on
      x86) only below 2^-94 of it, not far from the exact shift's 2^-126. The
      lower bound is the row's best score against its own key and the 16
      longest keys (where an outstanding score comes from), an L × 17 product.
    Only a row whose maximum passes that lower bound by about 150 or more
    while the upper bound is looser still can overflow, one weight or their
    sum; the attention then makes its output not finite and ExactIfOverflow
    runs the tower again with each row's maximum.
    """
    squared_norms = (keys * keys).sum(axis=-1)
    cauchy_schwarz = mx.sqrt((queries * queries).sum(axis=-1, keepdims=True)) * mx.sqrt(
        squared_norms.max(axis=-1, keepdims=True))[..., None]
    per_dimension = mx.maximum(queries * keys.max(axis=-2, keepdims=True),
                               queries * keys.min(axis=-2, keepdims=True)).sum(axis=-1, keepdims=True)
    upper = mx.minimum(cauchy_schwarz, per_dimension)
    own = (queries * keys).sum(axis=-1, keepdims=True)
    longest = min(_LONGEST_KEYS, keys.shape[-2])
    indices = mx.argpartition(-squared_norms, longest - 1, axis=-1)[..., :longest]
    longest_keys = mx.take_along_axis(keys, indices[..., None], axis=-2)
    lower = mx.maximum(own, (queries @ longest_keys.swapaxes(-1, -2)).max(axis=-1, keepdims=True))
    return mx.minimum(upper, lower + _LEAST_LARGEST_EXPONENT)


def scores_minus_shift(queries: mx.array, keys: mx.array, shift: mx.array) -> mx.array:
    """q·kᵀ − shift in one matrix multiply: the shift rides in one more column, [q, −shift] · [k, 1]."""
    ones = mx.ones(keys.shape[:-1] + (1,), dtype=keys.dtype)
    return mx.concatenate([queries, -shift], axis=-1) @ mx.concatenate([keys, ones], axis=-1).swapaxes(-1, -2)


class ExactIfOverflow(nn.Module):
    """Wraps the vision tower: when its output is not finite, runs it again with exact row maxima, and keeps those.

    The check is one reduction and one wait at the end of the tower, after
    every stream's frames (parallel_vision), so the streams still overlap. A
    model whose scores outrun row_shift once will likely do it again: from
    then on every layer shifts by the row's maximum (the speed of before,
    never a second pass). If the exact pass is not finite either, the input
    itself was, and the fast shift stays.
    """

    def __init__(self, tower: nn.Module):
        super().__init__()
        self.inner = tower

    def __call__(self, *args, **kwargs):
        output = self.inner(*args, **kwargs)
        if _finite(output):
            return output
        layers = [module for module in self.inner.modules()
                  if isinstance(module, AttentionBase2) and not module.exact_row_max]
        if not layers:
            return output
        for layer in layers:
            layer.exact_row_max = True
        exact = self.inner(*args, **kwargs)
        if not _finite(exact):
            for layer in layers:
                layer.exact_row_max = False
            return exact
        log.warning("The vision tower's attention scores outran the fast softmax's shift; it ran again, and runs "
                    "from now on, with each row's maximum.")
        return exact


def _finite(output) -> bool:
    first = first_array(output)
    return first is None or bool(mx.isfinite(first).all().item())


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


def guard_against_overflow(model: nn.Module) -> bool:
    """Wrap `model`'s vision tower (after parallel_vision split it) in ExactIfOverflow; True when wrapped.

    Only a tower with AttentionBase2 layers (enable() changed it) needs it.
    """
    vision = getattr(model, "vision_model", None)
    if vision is None or isinstance(vision, ExactIfOverflow):
        return False
    if not any(isinstance(module, AttentionBase2) for module in vision.modules()):
        return False
    model.vision_model = ExactIfOverflow(vision)
    return True


def _is_plain_attention(module) -> bool:
    return all(hasattr(module, name) for name in ("q_proj", "k_proj", "v_proj", "out_proj", "num_heads", "scale"))
