"""The base-2 softmax attention and GELU compute what mlx-vlm's own layers compute."""


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
