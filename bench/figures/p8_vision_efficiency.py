"""P8: the full-size vision tower's GFLOP/s as a fraction of this machine's float32 GEMM peak, and where the rest goes.

    python -m bench.figures.p8_vision_efficiency --model DIR --video FILE   # one JSON line on stdout

`bench.run --only p8` runs this in a fresh process (OpenBLAS must be loaded before mlx, and the
full model's ~3 GiB should leave with it). In that process:

1. The model is loaded by the product's own `load_model` (float32, no image splitting, base-2 softmax
   and GELU, the tower split across one CPU stream per core) and a segment's frames are read by the
   product's `FrameReader` (8 frames of the bench video, longest edge 512).
2. The tower as the product runs it: `model.get_input_embeddings` on those frames (the vision tower,
   the connector and the image tokens' scatter, what mlx-vlm's generate calls), timed with `mx.eval`;
   the image processor's time (PIL frames -> 512x512 float array) is measured apart.
3. FLOPs per frame counted from the config (`vision_flops`, the formula written out) and
   cross-checked against the loaded weights (`weight_flops`: 2 x patches x each layer's weights).
4. The GEMM peak: float32 `mx.matmul` through the same BLAS in the same process. All the tower's
   matmul shapes and large squares before and after; a square and the MLP's shapes just before and
   after every round (A B A), so each round's fraction divides by the peak of its own minutes.
5. Where the time goes: the same tower evaluated step by step on one stream (`mx.eval` after each
   matmul, softmax, layer norm, GELU, ...; checked to give the tower's output), and the tower on
   one stream as a whole. `gap_seconds_per_frame` adds up to the product's time per frame.

No figure here is compared with a constant: every ratio is of two measurements in this run.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Optional

from bench.system import PY, ROOT, say

# Gap buckets: each step of the stepwise forward is timed under one of these names.
PARTS = ("patch_embedding", "layernorm", "qkv_out_projections", "attention_matmuls", "softmax", "mlp_matmuls",
         "gelu", "residuals_and_copies", "connector")
MATMUL_PARTS = ("qkv_out_projections", "attention_matmuls", "mlp_matmuls")


def vision_flops(image_size: int, patch_size: int, channels: int, hidden: int, layers: int, heads: int,
                 intermediate: int, scale_factor: int, text_hidden: int) -> Dict[str, float]:
    """Floating-point operations per frame of a SigLIP-style tower plus the Idefics3 connector.

    A multiply-add counts as 2. N = (image / patch)^2 patches, D = hidden, I = intermediate:
      patch embedding   2 N (p^2 C) D           (a p x p stride-p convolution = one matmul per patch)
      per layer:
        q, k, v, out    4 x 2 N D^2
        scores Q K^T    2 N^2 D                  (over all heads: heads x 2 N^2 (D / heads))
        weights x V     2 N^2 D
        MLP             2 x 2 N D I             (fc1 D->I, fc2 I->D)
      connector         2 (N / s^2) (D s^2) T   (pixel shuffle by s, then one projection to the text width T)
    Layer norms, softmax, GELU, biases and residuals add O(N D + heads N^2) operations (about 1 % here),
    estimated apart in `elementwise_approx` and not in `total`.
    """
    n = (image_size // patch_size) ** 2
    d, i = hidden, intermediate
    per_layer = {
        "qkv_out_projections": 4 * 2 * n * d * d,
        "attention_matmuls": 2 * (2 * n * n * d),
        "mlp_matmuls": 2 * (2 * n * d * i),
    }
    flops = {
        "patch_embedding": 2 * n * (patch_size * patch_size * channels) * d,
        **{name: layers * value for name, value in per_layer.items()},
        "connector": 2 * (n // scale_factor ** 2) * (d * scale_factor ** 2) * text_hidden,
    }
    flops["total"] = float(sum(flops.values()))
    flops["patches"] = n
    # Roughly: 2 layer norms (~8 per value), softmax (~4 per score), GELU (~10 per value), biases + residuals.
    flops["elementwise_approx"] = float(layers * (2 * 8 * n * d + 4 * heads * n * n + 10 * n * i + 8 * n * d))
    return flops


def _config_flops(model) -> Dict[str, float]:
    vision = model.config.vision_config
    return vision_flops(vision.image_size, vision.patch_size, vision.num_channels, vision.hidden_size,
                        vision.num_hidden_layers, vision.num_attention_heads, vision.intermediate_size,
                        model.config.scale_factor, model.config.text_config.hidden_size)


def _tower(model):
    """The unwrapped vision tower (parallel_vision wraps it in StreamSplitVision, fast_activations in ExactIfOverflow)."""
    tower = model.vision_model
    while not hasattr(tower, "encoder"):
        tower = tower.inner
    return tower


def weight_flops(model, patches: int) -> Dict[str, float]:
    """The same count from the loaded weights, for everything but the attention matmuls (which have none).

    2 x patches x each encoder Linear's weights (q, k, v, out, fc1, fc2), 2 x patches x the patch
    convolution's weights, 2 x (patches / s^2) x the connector projection's weights.
    """
    import mlx.nn as nn

    tower = _tower(model)
    linear = sum(module.weight.size for _, module in tower.encoder.named_modules() if isinstance(module, nn.Linear))
    shuffled = patches // model.config.scale_factor ** 2
    return {
        "encoder_linears": 2.0 * patches * linear,
        "patch_embedding": 2.0 * patches * tower.embeddings.patch_embedding.weight.size,
        "connector": 2.0 * shuffled * model.connector.modality_projection.proj.weight.size,
    }


def _timed(function: Callable[[], object]) -> float:
    import mlx.core as mx

    started = time.perf_counter()
    mx.eval(function())
    return time.perf_counter() - started


def _shape_name(shape: tuple) -> str:
    m, k, n, b = (*shape, 1)[:4]
    return f"{b}x{m}x{k}x{n}" if b > 1 else f"{m}x{k}x{n}"


def gemm_rates(shapes: List[tuple], repeats: int = 5) -> Dict[str, float]:
    """GFLOP/s of float32 (b x m x k) @ (b x k x n) through mlx's CPU matmul: the best of `repeats` runs."""
    import mlx.core as mx

    rates = {}
    for shape in shapes:
        m, k, n, b = (*shape, 1)[:4]
        left, right = mx.random.normal((b, m, k)), mx.random.normal((b, k, n))
        mx.eval(left, right)
        mx.eval(left @ right)  # warm: OpenBLAS's threads, the output buffer
        best = min(_timed(lambda: left @ right) for _ in range(repeats))
        rates[_shape_name(shape)] = 2.0 * b * m * k * n / best / 1e9
    return rates


def gemm_two_streams(shape: tuple, repeats: int = 3) -> float:
    """GFLOP/s of two such matmuls at once, one per CPU stream: how the split tower's matmuls run."""
    import mlx.core as mx

    m, k, n = shape
    streams = [mx.new_stream(mx.cpu) for _ in range(2)]
    pairs = [(mx.random.normal((m, k)), mx.random.normal((k, n))) for _ in streams]
    mx.eval(pairs)

    def both():
        out = []
        for stream, (left, right) in zip(streams, pairs):
            with mx.stream(stream):
                out.append(left @ right)
        return out

    mx.eval(both())
    best = min(_timed(both) for _ in range(repeats))
    return 2 * 2.0 * m * k * n / best / 1e9


def gemm_shapes(model, frames_per_stream: int, squares: tuple = (2048, 4096)) -> List[tuple]:
    """The tower's matmuls (one frame, and the batch one stream gets) and large squares."""
    vision = model.config.vision_config
    n = (vision.image_size // vision.patch_size) ** 2
    d, i, heads = vision.hidden_size, vision.intermediate_size, vision.num_attention_heads
    s = model.config.scale_factor
    return [
        (n, d, d), (n, d, i), (n, i, d),  # projections and MLP, one frame
        (frames_per_stream * n, d, i), (frames_per_stream * n, i, d),  # the same on one stream's frames
        (n, d // heads, n, heads), (n, n, d // heads, heads),  # attention: scores, weights x V
        (n // s ** 2, d * s ** 2, model.config.text_config.hidden_size),  # connector
        *((size, size, size) for size in squares),
    ]


def stepwise(model, pixels, patch_mask) -> Dict[str, object]:
    """The tower on one stream with `mx.eval` after every step, each step's time added to its part.

    Mirrors mlx-vlm's Idefics3 VisionModel + connector with the product's fast_activations
    (base-2 softmax with each row's shift inside the scores' matmul, normalised after x V, base-2
    GELU; the shift's L x head_dim work counts as softmax); `output` is returned to compare with the
    tower's own output.
    """
    import mlx.core as mx

    from video_analysis.model.fast_activations import _LOG2_E, gelu_tanh_base2, row_shift, scores_minus_shift

    tower = _tower(model)
    seconds = dict.fromkeys(PARTS, 0.0)

    def step(part: str, function: Callable[[], mx.array]) -> mx.array:
        started = time.perf_counter()
        value = function()
        mx.eval(value)
        seconds[part] += time.perf_counter() - started
        return value

    x = step("patch_embedding", lambda: tower.embeddings(pixels, patch_mask))
    batch, length, _ = x.shape
    for layer in tower.encoder.layers:
        attention = getattr(layer.self_attn, "inner", layer.self_attn)
        heads = attention.num_heads

        def split(projected):
            return projected.reshape(batch, length, heads, -1).transpose(0, 2, 1, 3)

        normed = step("layernorm", lambda: layer.layer_norm1(x))
        q = step("qkv_out_projections", lambda: attention.q_proj(normed))
        k = step("qkv_out_projections", lambda: attention.k_proj(normed))
        v = step("qkv_out_projections", lambda: attention.v_proj(normed))
        q = step("residuals_and_copies", lambda: q * (attention.scale * _LOG2_E))
        q, k = split(q), split(k)
        shift = step("softmax", lambda: row_shift(q, k))
        scores = step("attention_matmuls", lambda: scores_minus_shift(q, k, shift))
        weights = step("softmax", lambda: mx.power(2.0, scores))
        total = step("softmax", lambda: weights.sum(axis=-1, keepdims=True))
        total = step("softmax", lambda: mx.where(mx.isinf(total), mx.nan, total))
        mixed = step("attention_matmuls", lambda: weights @ split(v))
        mixed = step("softmax", lambda: mixed / total)
        merged = step("residuals_and_copies", lambda: mixed.transpose(0, 2, 1, 3).reshape(batch, length, -1))
        out = step("qkv_out_projections", lambda: attention.out_proj(merged))
        h = step("residuals_and_copies", lambda: x + out)
        normed = step("layernorm", lambda: layer.layer_norm2(h))
        up = step("mlp_matmuls", lambda: layer.mlp.fc1(normed))
        up = step("gelu", lambda: gelu_tanh_base2(up))
        down = step("mlp_matmuls", lambda: layer.mlp.fc2(up))
        x = step("residuals_and_copies", lambda: h + down)
    x = step("layernorm", lambda: tower.post_layernorm(x))
    out = step("connector", lambda: model.connector(x))
    return {"seconds": seconds, "output": out}


def measure(model_dir: str, video: str, frames: int, rounds: int, squares: tuple = (2048, 4096)) -> dict:
    """Everything P8 reports, in this process (see the module's docstring)."""
    from video_analysis.model.loading import load_model  # OpenBLAS first, then mlx

    import mlx.core as mx
    import numpy as np
    from mlx_vlm import apply_chat_template
    from mlx_vlm.utils import prepare_inputs, should_add_special_tokens

    from video_analysis.video import FrameReader, plan_segments, probe_video

    loaded = load_model(model_dir, "full")
    model, processor = loaded.model, loaded.processor
    info = probe_video(video)
    with FrameReader(video, info, max_edge=loaded.image_size) as reader:
        images = reader.read_segment(plan_segments(info.duration_seconds, 10)[0], frames)
    prompt = apply_chat_template(processor, model.config, "Describe the frames.", num_images=len(images))

    def preprocess():
        return prepare_inputs(processor, images=images, prompts=prompt,
                              image_token_index=getattr(model.config, "image_token_index", None),
                              add_special_tokens=should_add_special_tokens(model.config.model_type, processor))

    inputs = preprocess()
    input_ids, pixel_values, mask = inputs["input_ids"], inputs["pixel_values"], inputs.get("attention_mask")
    extra = {key: value for key, value in inputs.items() if key not in ("input_ids", "pixel_values", "attention_mask")}
    count = pixel_values.shape[0] * pixel_values.shape[1]

    def product():
        # What mlx-vlm's generate runs before the prompt's prefill, on the frames' own streams.
        return model.get_input_embeddings(input_ids, pixel_values, mask=mask, **extra).inputs_embeds

    flops = _config_flops(model)
    from_weights = weight_flops(model, flops["patches"])
    per_stream = -(-count // max(1, loaded.vision_streams))
    shapes = gemm_shapes(model, per_stream, squares)
    # The shapes measured again around every round (the shared CPU's load changes from minute to minute).
    big_mlp = shapes[3]  # fc1 on one stream's frames
    round_shapes = [(squares[0],) * 3, shapes[1], big_mlp]

    say(f"  P8: GEMM at {len(shapes)} shapes and on two streams at once (before the tower)")
    gemm_before = gemm_rates(shapes)
    two_streams = [gemm_two_streams(big_mlp)]
    say(f"  P8: warm-up, then {rounds} rounds of: GEMM peak, preprocessing, the tower as the product runs it "
        f"({count} frames, {loaded.vision_streams} streams), the tower on one stream, step by step")
    mx.eval(product())

    # The same tower without the stream split: the inner tower on all frames, same inputs as the product's.
    pixels = pixel_values.reshape(count, *pixel_values.shape[2:]).transpose(0, 2, 3, 1)
    patch = model.config.vision_config.patch_size
    patch_mask = mx.ones((count, pixels.shape[1] // patch, pixels.shape[2] // patch), dtype=mx.bool_)
    mx.eval(pixels, patch_mask)
    tower = _tower(model)

    def one_stream():
        hidden, *_ = tower(pixels, patch_attention_mask=patch_mask, output_hidden_states=True)
        return model.connector(hidden)

    # The one-stream tower must compute what the product computes: the image tokens' rows of its embeddings.
    embeds = np.array(product())[0]
    image_rows = np.where(np.array(input_ids)[0] == model.config.image_token_index)[0]
    own = np.array(one_stream()).reshape(len(image_rows), -1)
    product_difference = float(np.abs(embeds[image_rows] - own).max() / np.abs(own).max())

    times: Dict[str, list] = {"preprocess": [], "product": [], "one_stream": [], "stepwise": []}
    parts: Dict[str, list] = {name: [] for name in PARTS}
    peaks: List[float] = []
    fractions: List[float] = []
    max_difference = 0.0
    previous_peak = max(gemm_rates(round_shapes, repeats=3).values())
    for index in range(rounds):
        started = time.perf_counter()
        preprocess()
        times["preprocess"].append(time.perf_counter() - started)
        times["product"].append(_timed(product))
        times["one_stream"].append(_timed(one_stream))
        started = time.perf_counter()
        steps = stepwise(model, pixels, patch_mask)
        times["stepwise"].append(time.perf_counter() - started)
        for name, value in steps["seconds"].items():
            parts[name].append(value)
        if index == 0:  # the same computation every round: check it once (a whole tower's time)
            reference = one_stream()
            difference = mx.abs(steps["output"] - reference).max() / mx.abs(reference).max()
            max_difference = float(difference.item())
        # This round's peak: the best GEMM just before and just after it (A B A).
        next_peak = max(gemm_rates(round_shapes, repeats=3).values())
        peaks.append(max(previous_peak, next_peak))
        fractions.append(flops["total"] * count / times["product"][-1] / 1e9 / peaks[-1])
        say(f"  P8: round {index + 1}: tower {times['product'][-1] / count:.2f} s/frame, "
            f"peak {peaks[-1]:.0f} GFLOP/s, fraction {fractions[-1]:.2f}")
        previous_peak = next_peak
    say("  P8: GEMM again (after the tower)")
    gemm_after = gemm_rates(shapes)
    two_streams.append(gemm_two_streams(big_mlp))

    gemm = {name: max(gemm_before[name], gemm_after[name]) for name in gemm_before}
    peak = max([*gemm.values(), *peaks])
    per_frame = {name: statistics.median(values) / count for name, values in times.items()}
    part_seconds = {name: statistics.median(values) / count for name, values in parts.items()}
    vision_gflops = flops["total"] / per_frame["product"] / 1e9
    stepwise_sum = sum(part_seconds.values())
    matmul_names = (*MATMUL_PARTS, "connector", "patch_embedding")
    matmul_seconds = sum(part_seconds[name] for name in matmul_names)
    matmul_flops = sum(flops[name] for name in matmul_names)
    at_peak = 1e9 * statistics.median(peaks)
    # The product's seconds per frame, line by line: the FLOPs at this round's peak, what the matmuls take
    # beyond that, the other steps (from the step-by-step run on one stream), then the difference
    # between that run and the tower's own one-stream run, and what the stream split saves. They add up
    # to `vision_seconds_per_frame`.
    gap = {
        "flops_at_peak": flops["total"] / at_peak,
        "matmuls_below_peak": matmul_seconds - matmul_flops / at_peak,
        **{name: part_seconds[name] for name in PARTS if name not in matmul_names},
        "step_by_step_overhead": per_frame["one_stream"] - stepwise_sum,
        "stream_split": per_frame["product"] - per_frame["one_stream"],
    }
    return {
        "frames": count,
        "vision_streams": loaded.vision_streams,
        "fast_activation_layers": loaded.fast_activation_layers,
        "openblas": _openblas(),
        "openblas_num_threads": os.environ.get("OPENBLAS_NUM_THREADS"),
        "image_size": loaded.image_size,
        "flops_per_frame": flops,
        "weight_flops_per_frame": from_weights,
        "weight_vs_config_ratio": sum(from_weights.values()) / (flops["total"] - flops["attention_matmuls"]),
        "vision_seconds_per_frame": per_frame["product"],
        "one_stream_seconds_per_frame": per_frame["one_stream"],
        "stepwise_seconds_per_frame": per_frame["stepwise"],
        "preprocess_seconds_per_frame": per_frame["preprocess"],
        "vision_gflops": vision_gflops,
        "one_stream_gflops": flops["total"] / per_frame["one_stream"] / 1e9,
        "gemm_peak_gflops": peak,
        "gemm_peak_gflops_per_round": peaks,
        "gemm_gflops": gemm,
        "gemm_gflops_before": gemm_before,
        "gemm_gflops_after": gemm_after,
        "gemm_two_streams_gflops": max(two_streams),
        "gemm_two_streams_shape": _shape_name(big_mlp),
        "fraction_of_peak": statistics.median(fractions),
        "fraction_of_peak_per_round": fractions,
        "fraction_of_best_peak": vision_gflops / peak,
        "part_seconds_per_frame": part_seconds,
        "part_share_of_stepwise": {name: value / stepwise_sum for name, value in part_seconds.items()},
        "part_gflops": {name: flops[name] / part_seconds[name] / 1e9 for name in matmul_names},
        "matmul_gflops": matmul_flops / matmul_seconds / 1e9,
        "gap_seconds_per_frame": gap,
        "gap_share_of_product": {name: value / per_frame["product"] for name, value in gap.items()},
        "stepwise_vs_tower_max_relative_difference": max_difference,
        "one_stream_vs_product_max_relative_difference": product_difference,
        "rounds": rounds,
        "load_average": list(os.getloadavg()),
    }


def _openblas() -> Optional[str]:
    from video_analysis.model.openblas import preload_openblas

    return preload_openblas()


def p8_vision_efficiency(model_dir: str, video: str, frames: int, rounds: int = 3) -> dict:
    """`measure` in a fresh process with the product's environment (no LD_PRELOAD: the product preloads itself)."""
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    command = [PY, "-m", "bench.figures.p8_vision_efficiency", "--model", model_dir, "--video", video,
               "--frames", str(frames), "--rounds", str(rounds)]
    done = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--video", required=True)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--squares", default="2048,4096", help="sizes of the square GEMMs (the first is timed "
                                                                 "around every round)")
    args = parser.parse_args(argv)
    squares = tuple(int(size) for size in args.squares.split(","))
    print(json.dumps(measure(args.model, args.video, args.frames, args.rounds, squares)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
