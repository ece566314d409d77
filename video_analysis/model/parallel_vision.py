"""Run the vision tower on every CPU core: the frames are split across streams.

Why: on Linux CPU, mlx computes elementwise operations (the `exp` of the
attention softmax, the GELU's `tanh`) on one core and without SIMD, and in
SmolVLM's vision tower they take about 70 % of the time (8 frames of 512²:
1 024 patches each, so a 1 024 × 1 024 softmax per head per frame). Matrix
multiplies already use every core through OpenBLAS, elementwise work does not.
Frames are independent in the vision tower, so the batch is split into one
chunk per core, each chunk on its own mlx CPU stream (mlx evaluates streams
concurrently), and the outputs are concatenated again. While the split tower
is evaluated each stream's matrix multiplies get their share of OpenBLAS's
threads (one each on 2 cores), not the whole pool each. The result is the
same as one pass over the whole batch up to float rounding (OpenBLAS may
block a smaller matrix differently: ~1e-6 relative; 8 frames in two chunks of
4 gave bit-identical output on the full-size model).

Measured on a 2-core Xeon: the vision tower of the full-size model on 8
frames 31 s -> 21 s, a whole segment 41.8 s -> 31.5 s (`make bench`, key
`parallel_vision_speedup_full`, runs it with PARALLEL_VISION=1 and =0).
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, List, Optional

import mlx.core as mx
import mlx.nn as nn

from video_analysis.config import Config
from video_analysis.model.cores import usable_cores
from video_analysis.model.openblas import blas_threads, set_blas_threads


class StreamSplitVision(nn.Module):
    """Wraps a vision tower; calls it on chunks of the batch, one CPU stream each."""

    def __init__(self, vision_model: nn.Module, streams: int):
        super().__init__()
        self.inner = vision_model
        # Streams belong to the thread that makes them: this object must be
        # built and called on the model's own thread.
        self._streams = [mx.new_stream(mx.cpu) for _ in range(streams)]
        self._active = streams  # fewer when the process gets fewer cores (ModelRunner.share_cores)

    @property
    def stream_count(self) -> int:
        return len(self._streams)

    def use_streams(self, count: int) -> int:
        """Split across `count` of the streams from now on (1 to `stream_count`); returns the number used."""
        self._active = max(1, min(int(count), len(self._streams)))
        return self._active

    def __call__(self, x: mx.array, patch_attention_mask: Optional[mx.array] = None,
                 output_hidden_states: Optional[bool] = None):
        chunks = _chunk_bounds(x.shape[0], self._active)
        if len(chunks) < 2:
            return self.inner(x, patch_attention_mask=patch_attention_mask,
                              output_hidden_states=output_hidden_states)
        outputs = []
        for stream, (start, stop) in zip(self._streams, chunks):
            mask = None if patch_attention_mask is None else patch_attention_mask[start:stop]
            with mx.stream(stream):
                outputs.append(self.inner(x[start:stop], patch_attention_mask=mask,
                                          output_hidden_states=output_hidden_states))
        output = _concatenate_outputs(outputs)
        # Only the tower's output proper: mlx-vlm keeps nothing else, and the hidden states' concatenations
        # (13 of them with output_hidden_states) stay lazy, so never computed.
        with _blas_threads_per_stream(self._streams[:len(chunks)]):
            mx.eval(first_array(output))
        return output


def enable(model: nn.Module, streams: Optional[int] = None) -> int:
    """Split `model`'s vision tower across `streams` (default: usable cores) CPU streams.

    The tower must take a batch of independent images as
    `(x, patch_attention_mask=, output_hidden_states=)` (SmolVLM/Idefics3's;
    model/loading.py decides which models get this). Returns the number of streams
    in use, 1 when nothing was changed (one core, no vision tower,
    `PARALLEL_VISION=0`). Call it on the model's thread.
    """
    if not Config.from_env().PARALLEL_VISION:
        return 1
    vision = getattr(model, "vision_model", None)
    if vision is None:
        return 1
    if isinstance(vision, StreamSplitVision):
        return vision.stream_count
    streams = streams or usable_cores()
    if streams < 2:
        return 1
    model.vision_model = StreamSplitVision(vision, streams)
    return streams


def first_array(output) -> Optional[mx.array]:
    """The tower's output proper: the array itself, or the first of a tuple/list (the pooled output)."""
    while isinstance(output, (tuple, list)):
        output = output[0] if output else None
    return output


@contextmanager
def _blas_threads_per_stream(streams: List[mx.Stream]) -> Iterator[None]:
    """OpenBLAS's threads divided among `streams` while the split tower is evaluated, then as they were.

    Each stream calls OpenBLAS from its own thread; with the whole pool each,
    two streams ran four threads on two cores, which wait for each other
    (8 frames of 512²: 1.58 s per frame with 2 threads each, 1.32 with 1; P8).
    OpenBLAS's count is process-wide: it is changed only while nothing else
    computes (the model thread is mlx's only user) and given back before the
    text model's decoding, which wants every thread.
    """
    threads = blas_threads()
    share = max(1, threads // len(streams)) if threads else None
    if share is None or share >= threads:
        yield
        return
    _synchronize(streams)
    set_blas_threads(share)
    try:
        yield
    finally:
        try:
            _synchronize(streams)  # nothing may run on OpenBLAS's pool while it is resized
        finally:
            set_blas_threads(threads)


def _synchronize(streams: List[mx.Stream]) -> None:
    mx.synchronize()
    for stream in streams:
        mx.synchronize(stream)


def split_of(model: nn.Module) -> Optional[StreamSplitVision]:
    """The StreamSplitVision in `model.vision_model`, under any wrappers around it (fast_activations'); or None."""
    vision = getattr(model, "vision_model", None)
    while vision is not None and not isinstance(vision, StreamSplitVision):
        vision = vision.get("inner") if isinstance(vision, nn.Module) else None
    return vision


def _chunk_bounds(count: int, parts: int) -> List[tuple]:
    """[start, stop) ranges splitting `count` items into at most `parts` nearly equal chunks."""
    parts = max(1, min(parts, count))
    size, extra = divmod(count, parts)
    bounds, start = [], 0
    for index in range(parts):
        stop = start + size + (1 if index < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _concatenate_outputs(outputs: list):
    """Join per-chunk outputs (arrays, or tuples/lists of them, or None) along the batch axis."""
    first = outputs[0]
    if first is None:
        return None
    if isinstance(first, mx.array):
        return mx.concatenate(outputs, axis=0)
    if isinstance(first, (tuple, list)):
        return type(first)(_concatenate_outputs(list(parts)) for parts in zip(*outputs))
    return first
