"""Cancel during a long prompt's prefill, and the 2 x 8 KiB CJK prompts of issue 14, before and after.

    python -m bench.experiment_prefill_cancel [--rounds 5] [--repeats 30]

Tiny model (`tools.make_tiny_model`, preset tiny, 8,192 positions), real mlx_vlm.
"Before" is `ModelRunner(prefill_chunk_tokens=None)`: mlx-vlm's own prefill
(2,048-token steps, cancel seen only after the first generated token), which is
exactly what the runner did until the prefill was chunked; "after" is the
default runner (PREFILL_CHUNK_TOKENS per step, cancel checked before each).

1. cancel -> next job's first token: a long prompt inside the limit (user
   prompt of 2,600 CJK characters, 7,800 tokens; 8 frames) is submitted with a
   cancel event, the event is set a quarter of the way into its prefill (a
   quarter of its measured uncancelled time to first token), and at once the
   next job (default highlights prompts, 8 frames, max_tokens 1, so its end is
   its first token) is submitted. Time from setting the event to the next
   job's answer; rounds interleave before and after; medians.
2. the 2 x 8 KiB CJK prompts (system and user, 8,190 bytes each): before, in a
   fresh process, the call the runner made for them (time, VmRSS before, peak
   VmHWM after); after, in a fresh process, the upload through the app (Flask
   test client) and its answer (status, detail, time, the same RSS figures).
3. a normal segment (default highlights prompts, 8 frames, 32 tokens): median
   time per call before and after, interleaved, and whether the answers match.

Prints a summary and writes bench/results/experiments/<date>-prefill-cancel.json
(a subfolder, so bench/report.py never takes it for a `make bench` result).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from tools.make_tiny_model import cached_checkpoint  # noqa: E402  (does not import mlx)

OUT_DIR = os.path.join(ROOT, "bench", "results", "experiments")
MODELS = os.path.join(ROOT, ".cache", "models")
CJK_8_KIB = "\u6f22" * (8 * 1024 // 3)  # 8,190 bytes: inside the 8 KiB byte limit
LONG_PROMPT = "\u6f22" * 2600  # 7,800 tokens on the tiny tokenizer: inside the token limit with 8 frames


def frames(n, size, seed=0):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def memory_mib() -> dict:
    fields = {}
    with open("/proc/self/status") as handle:
        for line in handle:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:  # "5": reset VmHWM to the current RSS (Linux)
        handle.write("5")


# -- 1 and 3: in this process ----------------------------------------------------------------
def cancel_to_next(runners: dict, rounds: int) -> dict:
    from video_analysis.cancellation import CancelToken, Cancelled
    from video_analysis.engine.prompts import HIGHLIGHTS_SYSTEM, HIGHLIGHTS_USER

    any_runner = next(iter(runners.values()))
    images = frames(8, any_runner.image_size or 64)
    assert any_runner.prompt_problem(None, LONG_PROMPT, 8, 64, default_system_prompt=HIGHLIGHTS_SYSTEM) is None
    prefill = {}
    for name, runner in runners.items():  # warm, then the long prompt's uncancelled time to first token
        runner.generate(images, LONG_PROMPT, system_prompt=HIGHLIGHTS_SYSTEM, max_tokens=1)
        started = time.perf_counter()
        runner.generate(images, LONG_PROMPT, system_prompt=HIGHLIGHTS_SYSTEM, max_tokens=1)
        prefill[name] = time.perf_counter() - started
    results = {name: [] for name in runners}
    for _ in range(rounds):
        for name, runner in runners.items():
            cancel = CancelToken()
            stopped = {}
            chunks_before = runner.prefill_chunks
            long_job = runner.submit(images, LONG_PROMPT, system_prompt=HIGHLIGHTS_SYSTEM, max_tokens=64,
                                     cancel=cancel)
            long_job.add_done_callback(lambda _: stopped.setdefault("at", time.perf_counter()))
            time.sleep(prefill[name] / 4)
            cancelled_at = time.perf_counter()
            cancel.cancel()
            next_job = runner.submit(images, HIGHLIGHTS_USER, system_prompt=HIGHLIGHTS_SYSTEM, max_tokens=1)
            next_job.result()
            answered_at = time.perf_counter()
            try:
                long_job.result()
                outcome = "completed"
            except Cancelled as error:
                outcome = str(error)
            results[name].append({
                "cancel_to_next_first_token_s": round(answered_at - cancelled_at, 4),
                "cancel_to_long_job_stopped_s": round(stopped["at"] - cancelled_at, 4),
                "long_job": outcome,
                "prefill_chunks_run": runner.prefill_chunks - chunks_before,
            })
    return {
        "long_prompt_tokens": any_runner.prompt_budget.prompt_tokens(HIGHLIGHTS_SYSTEM, LONG_PROMPT, 8),
        "long_prompt_time_to_first_token_s": {name: round(value, 3) for name, value in prefill.items()},
        "median_cancel_to_next_first_token_s": {
            name: round(statistics.median(r["cancel_to_next_first_token_s"] for r in rows), 4)
            for name, rows in results.items()},
        "rounds": results,
    }


def normal_segment(runners: dict, repeats: int) -> dict:
    from video_analysis.engine.prompts import HIGHLIGHTS_SYSTEM, HIGHLIGHTS_USER

    any_runner = next(iter(runners.values()))
    images = frames(8, any_runner.image_size or 64, seed=1)
    times = {name: [] for name in runners}
    answers = {}
    for _ in range(repeats):
        for name, runner in runners.items():
            started = time.perf_counter()
            answers[name] = runner.generate(images, HIGHLIGHTS_USER, system_prompt=HIGHLIGHTS_SYSTEM, max_tokens=32)
            times[name].append(time.perf_counter() - started)
    return {
        "prompt_tokens": any_runner.prompt_budget.prompt_tokens(HIGHLIGHTS_SYSTEM, HIGHLIGHTS_USER, 8),
        "median_ms": {name: round(1000 * statistics.median(values), 2) for name, values in times.items()},
        "answers_identical": len(set(answers.values())) == 1,
    }


# -- 2: each side in a fresh process ---------------------------------------------------------
def overflow_before(model_dir: str) -> dict:
    from video_analysis.model.runner import ModelRunner

    runner = ModelRunner(model_dir, prefill_chunk_tokens=None)
    runner.wait_until_loaded(120)
    images = frames(8, runner.image_size or 64)
    runner.generate(images, "Describe the video.", max_tokens=8)  # warm, as a running server is
    rss = memory_mib()["VmRSS"]
    reset_peak()
    started = time.perf_counter()
    runner.generate(images, CJK_8_KIB, system_prompt=CJK_8_KIB, max_tokens=64)
    seconds = time.perf_counter() - started
    peak = memory_mib()["VmHWM"]
    tokens = runner.prompt_budget.prompt_tokens(CJK_8_KIB, CJK_8_KIB, 8)
    runner.close()
    return {"what": "ModelRunner.generate with both prompts, as a job ran it before (no refusal, mlx-vlm prefill)",
            "prompt_tokens": tokens, "call_s": round(seconds, 3), "rss_before_mib": round(rss, 1),
            "peak_rss_mib": round(peak, 1)}


def overflow_after(model_dir: str) -> dict:
    import tempfile

    from video_analysis.web.app import create_app
    from video_analysis.web.services import EXTENSION_KEY
    from tools.synthetic_video import write_video

    with tempfile.TemporaryDirectory() as scratch:
        video = write_video(os.path.join(scratch, "clip.mp4"), duration=6, fps=10)
        app = create_app({"MODEL": model_dir, "DATA_DIR": os.path.join(scratch, "data")})
        app.extensions[EXTENSION_KEY].engine.runner.wait_until_loaded(120)
        client = app.test_client()

        def post(**fields):
            with open(video, "rb") as handle:
                return client.post("/api/v1/video/upload", content_type="multipart/form-data",
                                   data={"video": (handle, "clip.mp4"), **fields})

        warm = post()  # a normal job first, as a running server has had
        session = warm.get_json()["sessionId"]
        while client.get(f"/api/v1/video/status/{session}").get_json()["status"] not in ("completed", "failed"):
            time.sleep(0.05)
        rss = memory_mib()["VmRSS"]
        reset_peak()
        started = time.perf_counter()
        response = post(system_prompt=CJK_8_KIB, user_prompt=CJK_8_KIB)
        seconds = time.perf_counter() - started
        peak = memory_mib()["VmHWM"]
        body = response.get_json()
        app.extensions[EXTENSION_KEY].close()
    return {"what": "POST /api/v1/video/upload with both prompts (Flask test client)",
            "status": response.status_code, "field": body.get("field"), "detail": body.get("detail"),
            "call_s": round(seconds, 3), "rss_before_mib": round(rss, 1), "peak_rss_mib": round(peak, 1)}


def in_fresh_process(side: str, model_dir: str) -> dict:
    output = subprocess.run([sys.executable, os.path.abspath(__file__), "--overflow", side, "--model", model_dir],
                            check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(output.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--model", help="checkpoint directory (default: the cached tiny one)")
    parser.add_argument("--overflow", choices=("before", "after"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from video_analysis.model.openblas import preload_openblas

    preload_openblas()
    model_dir = args.model or str(cached_checkpoint(MODELS, "tiny", 0))
    if args.overflow:
        result = (overflow_before if args.overflow == "before" else overflow_after)(model_dir)
        print(json.dumps(result))
        return 0

    from video_analysis.model.runner import PREFILL_CHUNK_TOKENS, ModelRunner

    runners = {"before": ModelRunner(model_dir, prefill_chunk_tokens=None), "after": ModelRunner(model_dir)}
    for runner in runners.values():
        runner.wait_until_loaded(120)
    try:
        cancel = cancel_to_next(runners, args.rounds)
        normal = normal_segment(runners, args.repeats)
    finally:
        for runner in runners.values():
            runner.close()
    overflow = {side: in_fresh_process(side, model_dir) for side in ("before", "after")}
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python -m bench.experiment_prefill_cancel " + " ".join(argv if argv is not None else sys.argv[1:]),
        "model": os.path.basename(model_dir), "prefill_chunk_tokens_after": PREFILL_CHUNK_TOKENS,
        "load_average": os.getloadavg(), "cores": os.cpu_count(),
        "cancel_to_next_job": cancel, "normal_segment": normal, "two_8_kib_cjk_prompts": overflow,
    }
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, f"{datetime.date.today().isoformat()}-prefill-cancel.json")
    with open(path, "w") as handle:
        json.dump(results, handle, indent=2, ensure_ascii=False)
    median = cancel["median_cancel_to_next_first_token_s"]
    print(f"long prompt: {cancel['long_prompt_tokens']:,} tokens, time to first token "
          f"{cancel['long_prompt_time_to_first_token_s']}")
    print(f"cancel -> next job's first token (median of {args.rounds}): before {median['before']:.3f} s, "
          f"after {median['after']:.3f} s")
    print(f"normal segment ({normal['prompt_tokens']} tokens, 32 generated): before {normal['median_ms']['before']} ms,"
          f" after {normal['median_ms']['after']} ms, answers identical: {normal['answers_identical']}")
    before, after = overflow["before"], overflow["after"]
    print(f"2 x 8 KiB CJK before: {before['prompt_tokens']:,} tokens, {before['call_s']:.2f} s, RSS "
          f"{before['rss_before_mib']:.0f} -> peak {before['peak_rss_mib']:.0f} MiB")
    print(f"2 x 8 KiB CJK after: {after['status']} field={after['field']} in {after['call_s']:.3f} s, RSS "
          f"{after['rss_before_mib']:.0f} -> peak {after['peak_rss_mib']:.0f} MiB: {after['detail']}")
    print(f"wrote {os.path.relpath(path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
