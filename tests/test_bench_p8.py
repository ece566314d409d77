"""P8's counting and its step-by-step tower (bench/figures/p8_vision_efficiency.py), on the tiny checkpoint.

The figure itself runs on the full-size model (`python -m bench.run --only p8`); here the parts that
could be wrong without a slow run: the FLOP formula against the loaded weights, the step-by-step
forward against the tower it takes apart, and the script end to end on a 2 s video.
"""
import json
import os
import subprocess
import sys

import pytest

from bench.figures.p8_vision_efficiency import PARTS, stepwise, vision_flops, weight_flops
from tools.synthetic_video import write_video
from video_analysis.model.loading import load_model  # OpenBLAS before mlx

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_flops_of_the_full_size_shapes_written_out():
    """SmolVLM2-500M's tower at 512²: N = 1024 patches, D = 768, I = 3072, 12 layers, connector 12288 -> 960."""
    flops = vision_flops(512, 16, 3, 768, 12, 12, 3072, 4, 960)
    n, d = 1024, 768
    assert flops["patches"] == n
    assert flops["qkv_out_projections"] == 12 * 4 * 2 * n * d * d
    assert flops["attention_matmuls"] == 12 * 12 * 2 * (2 * n * n * 64)  # per head: QK^T and x V
    assert flops["total"] == pytest.approx(215.32e9, rel=1e-4)
    assert flops["elementwise_approx"] < 0.01 * flops["total"]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_model(tiny_model_dir, "tiny")  # as the product loads it: fast activations, split streams


def test_the_formula_agrees_with_the_loaded_weights(tiny):
    config = tiny.model.config
    vision = config.vision_config
    flops = vision_flops(vision.image_size, vision.patch_size, vision.num_channels, vision.hidden_size,
                         vision.num_hidden_layers, vision.num_attention_heads, vision.intermediate_size,
                         config.scale_factor, config.text_config.hidden_size)
    counted = weight_flops(tiny.model, flops["patches"])
    assert counted["encoder_linears"] == flops["qkv_out_projections"] + flops["mlp_matmuls"]
    assert counted["patch_embedding"] == flops["patch_embedding"]
    assert counted["connector"] == flops["connector"]


def test_the_step_by_step_tower_computes_the_towers_output(tiny):
    model = tiny.model
    assert tiny.fast_activation_layers > 0 and tiny.vision_streams >= 1
    size, patch = model.config.vision_config.image_size, model.config.vision_config.patch_size
    pixels = mx.random.normal((3, size, size, 3), key=mx.random.key(3))
    patch_mask = mx.ones((3, size // patch, size // patch), dtype=mx.bool_)
    hidden, *_ = model.vision_model(pixels, patch_attention_mask=patch_mask, output_hidden_states=True)
    expected = np.array(model.connector(hidden))
    steps = stepwise(model, pixels, patch_mask)
    np.testing.assert_allclose(np.array(steps["output"]), expected, rtol=1e-4, atol=1e-5)
    assert set(steps["seconds"]) == set(PARTS) and all(value > 0 for value in steps["seconds"].values())


def test_the_figure_runs_end_to_end_on_the_tiny_model(tiny_model_dir, tmp_path):
    video = write_video(str(tmp_path / "clip.mp4"), duration=2.0, fps=10, size=(96, 64))
    done = subprocess.run([sys.executable, "-m", "bench.figures.p8_vision_efficiency", "--model", tiny_model_dir,
                           "--video", video, "--frames", "2", "--rounds", "1", "--squares", "128"],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    figure = json.loads(done.stdout.strip().splitlines()[-1])
    assert figure["frames"] == 2 and figure["weight_vs_config_ratio"] == pytest.approx(1.0)
    assert figure["one_stream_vs_product_max_relative_difference"] < 1e-4
    round_peak = figure["gemm_peak_gflops_per_round"][0]
    assert figure["fraction_of_peak"] == pytest.approx(figure["vision_gflops"] / round_peak)
    # The gap's lines add up to the product's time per frame.
    assert sum(figure["gap_seconds_per_frame"].values()) == pytest.approx(figure["vision_seconds_per_frame"])
