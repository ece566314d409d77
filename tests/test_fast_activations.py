"""The base-2 softmax attention and GELU compute what mlx-vlm's own layers compute."""


import math

import pytest

from video_analysis.model.openblas import preload_openblas  # noqa: E402

preload_openblas()  # before mlx

import mlx.core as mx  # noqa: E402
import mlx.nn as nn  # noqa: E402
import numpy as np  # noqa: E402

from video_analysis.model import fast_activations  # noqa: E402


@pytest.fixture
def tiny_vision(tiny_model_dir):
    """A fresh vision tower per test: enable() changes the model in place."""
    from mlx_vlm import load

    model, _ = load(tiny_model_dir)
    model.set_dtype(mx.float32)
    return model.vision_model


def test_gelu_matches_mlx_over_a_wide_range():
    x = mx.concatenate([mx.linspace(-12, 12, 20001), mx.array([-1e4, -80.0, -0.0, 0.0, 80.0, 1e4])])
    ours, theirs = np.array(fast_activations.gelu_tanh_base2(x)), np.array(nn.gelu_approx(x))
    assert np.isfinite(ours).all()
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_attention_matches_the_layer_it_replaces(tiny_vision):
    original = tiny_vision.encoder.layers[0].self_attn
    x = mx.random.normal((3, 16, original.q_proj.weight.shape[1]), key=mx.random.key(1)) * 4
    replaced = fast_activations.AttentionBase2(original)
    np.testing.assert_allclose(np.array(replaced(x)), np.array(original(x)), rtol=1e-4, atol=1e-5)
    mask = mx.zeros((16, 16))
    np.testing.assert_array_equal(np.array(replaced(x, mask)), np.array(original(x, mask)))


def test_enable_changes_every_layer_and_keeps_the_output(tiny_vision, monkeypatch):
    size = tiny_vision.embeddings.image_size
    x = mx.random.uniform(shape=(2, size, size, 3), key=mx.random.key(2))
    before = np.array(tiny_vision(x)[0])
    monkeypatch.setenv("FAST_ACTIVATIONS", "0")
    assert fast_activations.enable(tiny_vision) == 0
    monkeypatch.delenv("FAST_ACTIVATIONS")
    layers = tiny_vision.encoder.layers
    assert fast_activations.enable(tiny_vision) == len(layers) > 0
    assert all(isinstance(layer.self_attn, fast_activations.AttentionBase2) for layer in layers)
    assert all(isinstance(layer.mlp.activation_fn, fast_activations.GeluTanhBase2) for layer in layers)
    assert fast_activations.enable(tiny_vision) == 0  # already replaced: nothing left to change
    np.testing.assert_allclose(np.array(tiny_vision(x)[0]), before, rtol=1e-4, atol=1e-5)


def _softmax_rows(scores: np.ndarray) -> np.ndarray:
    weights = np.exp2(scores - scores.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


@pytest.mark.parametrize("scale", [0.01, 0.5, 1.0, 2.0])
def test_the_row_shift_keeps_every_weight_finite_and_the_largest_one_normal(scale):
    # Base-2 scores of 2 frames x 3 heads x 256 patches x 64 dims, random queries and keys: standard
    # deviations from 0.08 to 32 (a softmax over 256 scores spread that far is all but one-hot already).
    queries = mx.random.normal((2, 3, 256, 64), key=mx.random.key(3)) * scale
    keys = mx.random.normal((2, 3, 256, 64), key=mx.random.key(4)) * scale
    shifted = np.array(fast_activations.scores_minus_shift(queries, keys, fast_activations.row_shift(queries, keys)))
    assert np.isfinite(np.exp2(shifted)).all()
    assert (shifted.max(axis=-1) >= -32.01).all()  # the largest weight of every row is at least 2^-32
    exact = np.array(queries, dtype=np.float64) @ np.array(keys, dtype=np.float64).swapaxes(-1, -2)
    np.testing.assert_allclose(_softmax_rows(shifted.astype(np.float64)), _softmax_rows(exact), atol=2e-5 * max(1, scale))


def test_a_row_whose_scores_the_shift_cannot_reach_overflows():
    # Row 0: its own key scores -10, the 16 longest keys 0 (orthogonal to it), so its maximum looks like 0
    # and the shift is 0 + 32; the upper bound is 300 and the last key really scores 300, 268 above the
    # shift: the case ExactIfOverflow exists for.
    queries = mx.array([[10.0, 0.0]] + [[0.0, 0.001]] * 17)[None, None]
    keys = mx.array([[-1.0, 0.0]] + [[0.0, 1000.0]] * 16 + [[30.0, 0.0]])[None, None]
    shifted = np.array(fast_activations.scores_minus_shift(queries, keys, fast_activations.row_shift(queries, keys)))
    assert shifted[0, 0, 0, -1] == pytest.approx(268.0)
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.exp2(shifted[0, 0, 0])).all() and np.isfinite(np.exp2(shifted[0, 0, 1:])).all()


def test_finite_weights_whose_sum_overflows_make_the_row_not_finite_rather_than_zero(tiny_vision):
    # Identity projections (V scaled down), one head's first two dimensions in use: row 0 looks at two keys
    # scoring 127.1 above its shift, each weight finite, their sum not; x / inf would be a silent 0.
    attention = tiny_vision.encoder.layers[0].self_attn
    width = attention.q_proj.weight.shape[0]
    for projection, scale in ((attention.q_proj, 1.0), (attention.k_proj, 1.0), (attention.v_proj, 1e-3),
                              (attention.out_proj, 1.0)):
        projection.weight = mx.eye(width) * scale
        projection.bias = mx.zeros((width,))
    base2 = attention.scale / math.log(2.0)
    strong = 159.5 / base2  # the two keys' score with row 0, 127.1 above the shift (0.36 + 32)
    rows = np.zeros((19, width), dtype=np.float32)
    rows[0, 0] = 1.0
    rows[1:17, 1] = 1000.0  # the 16 longest keys, orthogonal to row 0
    rows[17:, 0] = strong
    x = mx.array(rows)[None]
    exact = np.array(attention(x))
    assert np.isfinite(exact).all() and abs(exact[0, 0, 0]) > 0.1
    fast = np.array(fast_activations.AttentionBase2(attention)(x))
    assert not np.isfinite(fast[0, 0]).all()  # caught by ExactIfOverflow, where 0 would have passed
    np.testing.assert_allclose(fast[0, 1:], exact[0, 1:], rtol=1e-4, atol=1e-4)


def _vision_with_sharp_attention(model):
    """The tiny tower with its first layer's queries and keys 100x: scores in the thousands."""
    attention = model.vision_model.encoder.layers[0].self_attn
    attention.q_proj.weight = attention.q_proj.weight * 100
    attention.k_proj.weight = attention.k_proj.weight * 100
    return model.vision_model


def test_the_tower_runs_again_with_exact_maxima_when_the_shift_overflows(tiny_model_dir, caplog, monkeypatch):
    from mlx_vlm import load

    from video_analysis.model import parallel_vision

    model, _ = load(tiny_model_dir)
    model.set_dtype(mx.float32)
    vision = _vision_with_sharp_attention(model)
    size = vision.embeddings.image_size
    x = mx.random.uniform(shape=(4, size, size, 3), key=mx.random.key(2))
    reference = np.array(vision(x)[0])  # mlx-vlm's own layers, softmax with the row maximum
    assert np.isfinite(reference).all()
    assert fast_activations.enable(vision) > 0
    # The tiny tower has 16 patches: its 16 longest keys are all of them and the lower bound is exact.
    # With one, its scores 100x outrun the shift as a real model's could.
    monkeypatch.setattr(fast_activations, "_LONGEST_KEYS", 1)
    assert not np.isfinite(np.array(vision(x)[0])).all()  # the bounded shift alone overflows here
    assert parallel_vision.enable(model, streams=2) == 2
    assert fast_activations.guard_against_overflow(model)
    assert not fast_activations.guard_against_overflow(model)  # once
    assert parallel_vision.split_of(model) is model.vision_model.inner
    with caplog.at_level("WARNING", logger="video_analysis.model.fast_activations"):
        guarded = np.array(model.vision_model(x)[0])
    np.testing.assert_allclose(guarded, reference, rtol=1e-4, atol=1e-5)
    assert "it ran again, and runs from now on, with each row's maximum" in caplog.text
    layers = [module for module in model.vision_model.modules() if isinstance(module, fast_activations.AttentionBase2)]
    assert layers and all(layer.exact_row_max for layer in layers)  # kept: the next call needs one pass
    caplog.clear()
    with caplog.at_level("WARNING", logger="video_analysis.model.fast_activations"):
        again = np.array(model.vision_model(x[:2])[0])
    np.testing.assert_allclose(again, reference[:2], rtol=1e-4, atol=1e-5)
    assert caplog.text == ""


def test_a_tower_without_fast_attention_is_not_guarded(tiny_model_dir):
    from mlx_vlm import load

    model, _ = load(tiny_model_dir)
    assert not fast_activations.guard_against_overflow(model)
    assert not isinstance(model.vision_model, fast_activations.ExactIfOverflow)


def test_a_frame_that_is_not_finite_itself_leaves_the_fast_shift_on(tiny_model_dir, caplog):
    from mlx_vlm import load

    model, _ = load(tiny_model_dir)
    model.set_dtype(mx.float32)
    assert fast_activations.enable(model.vision_model) > 0 and fast_activations.guard_against_overflow(model)
    size = model.vision_model.inner.embeddings.image_size
    frames = np.random.default_rng(6).uniform(size=(2, size, size, 3)).astype(np.float32)
    frames[1, 3, 3, 0] = np.nan
    with caplog.at_level("WARNING", logger="video_analysis.model.fast_activations"):
        output = np.array(model.vision_model(mx.array(frames))[0])
    assert not np.isfinite(output).all()  # what the frame gives, exact or not
    layers = [module for module in model.vision_model.modules() if isinstance(module, fast_activations.AttentionBase2)]
    assert layers and not any(layer.exact_row_max for layer in layers)
    assert caplog.text == ""
