"""Splitting the vision tower's frames across CPU streams changes speed, not answers."""

import os
from pathlib import Path

import pytest

from video_analysis.model.openblas import blas_threads, preload_openblas, set_blas_threads  # noqa: E402

preload_openblas()  # before mlx

import mlx.core as mx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from video_analysis.model import parallel_vision  # noqa: E402
from video_analysis.model.runner import ModelRunner  # noqa: E402


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    from mlx_vlm import load

    model, _ = load(tiny_model_dir)
    model.set_dtype(mx.float32)
    return model


@pytest.mark.parametrize("count, parts, expected", [
    (8, 2, [(0, 4), (4, 8)]),
    (7, 2, [(0, 4), (4, 7)]),
    (3, 4, [(0, 1), (1, 2), (2, 3)]),
    (1, 2, [(0, 1)]),
    (5, 1, [(0, 5)]),
])
def test_chunk_bounds_cover_the_batch_once(count, parts, expected):
    assert parallel_vision._chunk_bounds(count, parts) == expected


@pytest.mark.parametrize("frames", [1, 3, 8])
@pytest.mark.parametrize("streams", [2, 3])
def test_split_output_matches_one_pass(tiny_model, frames, streams):
    vision = tiny_model.vision_model
    size = vision.embeddings.image_size
    patches = size // vision.embeddings.patch_size
    x = mx.random.uniform(shape=(frames, size, size, 3), key=mx.random.key(frames))
    mask = mx.ones((frames, patches, patches), dtype=mx.bool_)
    whole = vision(x, patch_attention_mask=mask, output_hidden_states=True)
    split = parallel_vision.StreamSplitVision(vision, streams)(x, patch_attention_mask=mask,
                                                                output_hidden_states=True)
    assert split[0].shape == whole[0].shape
    # Equal up to float rounding: OpenBLAS may block a smaller matrix differently.
    np.testing.assert_allclose(np.array(split[0]), np.array(whole[0]), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.array(split[1]), np.array(whole[1]), rtol=1e-5, atol=1e-5)
    assert len(split[2]) == len(whole[2])


@pytest.mark.skipif(not blas_threads() or blas_threads() < 2, reason="OpenBLAS with at least 2 threads")
def test_each_stream_gets_its_share_of_openblas_threads_while_the_split_tower_runs(tiny_model, monkeypatch):
    threads = blas_threads()
    two = [mx.new_stream(mx.cpu) for _ in range(2)]
    with parallel_vision._blas_threads_per_stream(two):
        assert blas_threads() == threads // 2
    assert blas_threads() == threads
    with parallel_vision._blas_threads_per_stream(two[:1]):  # one stream keeps the pool
        assert blas_threads() == threads
    with pytest.raises(RuntimeError):
        with parallel_vision._blas_threads_per_stream(two):
            raise RuntimeError("an evaluation that failed")
    assert blas_threads() == threads  # given back all the same
    vision = tiny_model.vision_model
    size = vision.embeddings.image_size
    x = mx.random.uniform(shape=(4, size, size, 3), key=mx.random.key(5))
    evaluated = []
    real_eval = mx.eval
    monkeypatch.setattr(mx, "eval", lambda *arrays: (evaluated.append(arrays), real_eval(*arrays)))
    parallel_vision.StreamSplitVision(vision, 2)(x, output_hidden_states=True)
    monkeypatch.undo()
    assert blas_threads() == threads  # given back for the text model's decoding
    # Only the pooled output is computed there: the 13 hidden states' concatenations stay lazy.
    assert len(evaluated) == 1 and len(evaluated[0]) == 1 and isinstance(evaluated[0][0], mx.array)
    assert evaluated[0][0].shape == (4, (size // vision.embeddings.patch_size) ** 2, vision.post_layernorm.weight.shape[0])


def test_enable_wraps_once_and_can_be_turned_off(tiny_model, monkeypatch):
    original = tiny_model.vision_model
    try:
        monkeypatch.setenv("PARALLEL_VISION", "0")
        assert parallel_vision.enable(tiny_model, streams=2) == 1
        assert tiny_model.vision_model is original
        monkeypatch.delenv("PARALLEL_VISION")
        assert parallel_vision.enable(tiny_model, streams=2) == 2
        wrapped = tiny_model.vision_model
        assert isinstance(wrapped, parallel_vision.StreamSplitVision) and wrapped.inner is original
        assert parallel_vision.enable(tiny_model, streams=3) == 2  # already wrapped: left as it is
        assert tiny_model.vision_model is wrapped
    finally:
        tiny_model.vision_model = original


@pytest.mark.parametrize("switch", ["PARALLEL_VISION", "FAST_ACTIVATIONS"])
def test_runner_answers_the_same_with_and_without_each_cpu_speedup(tiny_model_dir, monkeypatch, switch):
    rng = np.random.default_rng(3)
    frames = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(8)]
    answers, state = [], []
    for setting in ("1", "0"):
        monkeypatch.setenv(switch, setting)
        runner = ModelRunner(tiny_model_dir)
        try:
            runner.wait_until_loaded(120)
            answers.append(runner.generate(frames, "Describe the frames.", max_tokens=16))
            state.append((runner.vision_streams, runner.fast_activation_layers))
        finally:
            runner.close()
    cores = parallel_vision.usable_cores()
    streams, layers = cores if cores >= 2 else 1, vision_layer_count(tiny_model_dir)
    if switch == "PARALLEL_VISION":
        assert state == [(streams, layers), (1, layers)]
    else:
        assert state == [(streams, layers), (streams, 0)]
    assert answers[0] == answers[1] and answers[0]


def vision_layer_count(model_dir) -> int:
    import json

    config = json.loads((Path(model_dir) / "config.json").read_text())
    return config["vision_config"]["num_hidden_layers"]


def test_the_runner_uses_the_cores_it_is_given_from_the_next_request_on_and_answers_the_same(tiny_model_dir,
                                                                                            monkeypatch):
    rng = np.random.default_rng(5)
    frames = [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(8)]
    cores = len(os.sched_getaffinity(0))
    monkeypatch.delenv("MODEL_CORES", raising=False)
    runner = ModelRunner(tiny_model_dir)
    try:
        runner.wait_until_loaded(120)
        everything = runner.generate(frames, "Describe the frames.", max_tokens=16)
        assert runner.cores == cores and runner.vision_streams == (cores if cores >= 2 else 1)
        assert blas_threads() == min(cores, threads_at_load())
        assert runner.share_cores(1) == 1
        assert runner.cores == cores  # only from the next request on
        assert runner.generate(frames, "Describe the frames.", max_tokens=16) == everything
        assert (runner.cores, runner.vision_streams, blas_threads()) == (1, 1, 1)
        assert runner.share_cores(64) == cores  # more than there are: every usable core
        assert runner.generate(frames, "Describe the frames.", max_tokens=16) == everything
        assert runner.cores == cores and blas_threads() == min(cores, threads_at_load())
    finally:
        runner.close()
        set_blas_threads(cores)
    monkeypatch.setenv("MODEL_CORES", "1")  # the setting: from the start
    runner = ModelRunner(tiny_model_dir)
    try:
        runner.wait_until_loaded(120)
        assert (runner.cores, runner.vision_streams, blas_threads()) == (1, 1, 1)
    finally:
        runner.close()
        set_blas_threads(cores)


def threads_at_load() -> int:
    from video_analysis.model import openblas

    return openblas._threads_at_load
