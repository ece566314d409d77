"""Prompts are limited in tokens by the loaded model's context; cancel stops a prompt's prefill.

Issue 14, item 6: two 8 KiB CJK prompts are ~16,400 tokens, twice the tiny
model's 8,192 positions, and cancel was only checked between generated
tokens. Everything here runs the real tiny SmolVLM through the real mlx_vlm.
"""
import json
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from video_analysis.cancellation import CancelToken, Cancelled
from tests.support.api import upload, wait_for_status
from video_analysis.model import runner as model_runner
from video_analysis.model.runner import ModelRunner, RunnerClosed
from video_analysis.engine.prompts import HIGHLIGHTS_SYSTEM, HIGHLIGHTS_USER, WORKOUT_SYSTEM, WORKOUT_USER
from video_analysis.web.services import EXTENSION_KEY
from tests.support.problems import refused

UPLOAD = "/api/v1/video/upload"
CONTEXT = 8192  # the tiny preset's max_position_embeddings
CJK_8_KIB = "\u6f22" * (8 * 1024 // 3)  # 2730 characters of 3 bytes: 8190 bytes, just inside 8 KiB
LIMIT = re.compile(r"at most ([\d,]+) tokens")


def limit_in(body) -> int:
    match = LIMIT.search(body["detail"])
    assert match, body["detail"]
    return int(match.group(1).replace(",", ""))


def tokens_per_frame(model_dir) -> int:
    """What one frame costs in the prompt: <fake_token_around_image><global-img>, image_seq_len x <image>, <fake…>."""
    return json.loads((Path(model_dir) / "builder_info.json").read_text())["image_seq_len"] + 3


def text_of_tokens(n: int) -> str:
    """Plain text that the tiny byte-level tokenizer reads as exactly `n` tokens (one per byte: no merges
    among non-ASCII bytes), in at most n bytes."""
    threes, rest = divmod(n, 3)
    if rest == 1:
        return "\u6f22" * (threes - 1) + "\u00e9\u00e9"  # 3 (threes - 1) + 2 + 2
    return "\u6f22" * threes + "\u00e9" * (rest // 2)


def frames(n, seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for _ in range(n)]


# == (a) over HTTP: the limit in tokens ====================================================
@pytest.mark.parametrize("url", [UPLOAD, "/analyze/highlights"])
def test_two_8_kib_cjk_prompts_are_a_400_naming_the_field_and_a_limit_in_tokens(app, client, videos, url):
    svc = app.extensions[EXTENSION_KEY]
    response = upload(client, videos["short"], url=url, system_prompt=CJK_8_KIB, user_prompt=CJK_8_KIB)
    body = refused(app, response, 400, field="user_prompt")  # a tie between the two names user_prompt
    limit = limit_in(body)
    assert 0 < limit < CONTEXT
    assert "8,192 tokens" in body["detail"]  # the model's context, named
    assert "frames_per_segment" in body["detail"] and "max_tokens" in body["detail"]  # what to lower
    # Refused before it became a session or a job.
    assert set(svc.sessions.counts().values()) == {0} and svc.jobs.counts() == {"pending": 0, "processing": 0}


def test_one_8_kib_cjk_prompt_also_overflows_the_tiny_model(app, client, videos):
    body = refused(app, upload(client, videos["short"], user_prompt=CJK_8_KIB), 400, field="user_prompt")
    assert limit_in(body) < len(CJK_8_KIB.encode())  # 8,190 tokens: one per byte here


def test_the_larger_prompt_is_the_one_named(app, client, videos):
    body = refused(app, upload(client, videos["short"], system_prompt=CJK_8_KIB, user_prompt="Rate it."), 400,
                   field="system_prompt")
    assert "system_prompt" in body["detail"]


def test_a_prompt_exactly_at_the_limit_is_accepted_and_its_job_completes(app, client, videos, tiny_model_dir):
    from transformers import AutoTokenizer

    over = refused(app, upload(client, videos["short"], user_prompt=CJK_8_KIB), 400, field="user_prompt")
    limit = limit_in(over)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    at_limit, one_more = text_of_tokens(limit), text_of_tokens(limit + 1)
    assert len(tokenizer.encode(at_limit, add_special_tokens=False)) == limit
    assert len(tokenizer.encode(one_more, add_special_tokens=False)) == limit + 1

    body = refused(app, upload(client, videos["short"], user_prompt=one_more), 400, field="user_prompt")
    assert limit_in(body) == limit

    response = upload(client, videos["short"], user_prompt=at_limit)
    assert response.status_code == 202, response.get_data(as_text=True)
    seen = wait_for_status(client, response.get_json()["sessionId"], timeout=120)
    assert seen[-1]["status"] == "completed", seen[-1]


def test_the_limit_moves_with_frames_per_segment_and_max_tokens(app, client, videos, tiny_model_dir):
    def limit(**fields):
        return limit_in(refused(app, upload(client, videos["short"], user_prompt=CJK_8_KIB, **fields), 400,
                                field="user_prompt"))

    per_frame = tokens_per_frame(tiny_model_dir)
    base = limit(frames_per_segment="8", max_tokens="64")
    assert limit(frames_per_segment="4", max_tokens="64") == base + 4 * per_frame
    assert limit(frames_per_segment="8", max_tokens="100") == base - 36
    assert limit(frames_per_segment="8", max_tokens="64", analysis_type="workout") != base  # its own default system prompt


# == the runner's count is what the model is fed ==========================================
@pytest.fixture(scope="module")
def runner(tiny_model_dir):
    runner = ModelRunner(tiny_model_dir)
    runner.wait_until_loaded(120)
    yield runner
    runner.close()


@pytest.mark.parametrize("system,user,count", [
    (HIGHLIGHTS_SYSTEM, HIGHLIGHTS_USER, 8),
    (None, "Describe the video.", 1),
    (WORKOUT_SYSTEM, WORKOUT_USER, 3),
    ("x y z", "\u6f22" * 50 + " and more words", 5),
], ids=["highlights-8", "no-system-1", "workout-3", "cjk-5"])
def test_the_count_is_the_prompt_mlx_vlm_feeds_the_model(runner, system, user, count):
    from mlx_vlm import apply_chat_template
    from mlx_vlm.utils import prepare_inputs

    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
    prompt = apply_chat_template(runner._processor, runner._model.config, messages, num_images=count)
    fed = prepare_inputs(runner._processor, images=frames(count), prompts=prompt, add_special_tokens=True)
    assert runner.prompt_budget.prompt_tokens(system, user, count) == fed["input_ids"].shape[1]


def test_prompt_problem_answers_plain_values(runner):
    assert runner.prompt_problem(None, None, 8, 64, default_system_prompt=HIGHLIGHTS_SYSTEM,
                                 default_user_prompt=HIGHLIGHTS_USER) is None
    problem = runner.prompt_problem(CJK_8_KIB, CJK_8_KIB, 8, 64)
    assert isinstance(problem, tuple) and problem[0] == "user_prompt" and isinstance(problem[1], str)


def test_counting_from_request_threads_while_the_model_thread_generates(runner):
    expected = runner.prompt_problem(CJK_8_KIB, "Rate it.", 8, 64)
    future = runner.submit(frames(8), "\u6f22" * 2000, max_tokens=16)  # the model thread tokenizes and prefills
    answers, errors = [], []

    def count():
        try:
            while not future.done():
                answers.append(runner.prompt_problem(CJK_8_KIB, "Rate it.", 8, 64))
        except Exception as error:  # noqa: BLE001  (reported below)
            errors.append(error)

    threads = [threading.Thread(target=count) for _ in range(4)]
    for thread in threads:
        thread.start()
    future.result(timeout=120)
    for thread in threads:
        thread.join(30)
    assert errors == [] and answers and all(answer == expected for answer in answers)


# == (b) cancel during prefill =============================================================
LONG_PROMPT = "\u6f22" * 2500  # 7,500 tokens: inside the limit, many prefill chunks


def _chunks_needed(runner, prompt, count):
    tokens = runner.prompt_budget.prompt_tokens(None, prompt, count)
    return -(-(tokens - 1) // runner.prefill_chunk_tokens)  # the last token is the first decoding step


def _wait_for_chunks(runner, at_least, timeout=60.0):
    deadline = time.monotonic() + timeout
    while runner.prefill_chunks < at_least:
        assert time.monotonic() < deadline, "prefill never started"
        time.sleep(0.0005)
    return runner.prefill_chunks


def test_cancel_during_prefill_stops_it_between_chunks(runner):
    needed = _chunks_needed(runner, LONG_PROMPT, 8)
    assert needed >= 10
    start = runner.prefill_chunks
    cancel = CancelToken()
    future = runner.submit(frames(8), LONG_PROMPT, max_tokens=8, cancel=cancel)
    at_cancel = _wait_for_chunks(runner, start + 1)
    cancel.cancel()
    with pytest.raises(Cancelled, match="prefill"):
        future.result(timeout=120)
    done = runner.prefill_chunks - start
    assert done <= at_cancel - start + 1  # at most the chunk in flight when cancel was set
    assert done < needed
    # the runner is fine afterwards, and the next request runs
    start = runner.prefill_chunks
    assert isinstance(runner.generate(frames(2), "Describe the video.", max_tokens=4), str)
    assert runner.prefill_chunks == start + 1


def test_closing_the_runner_stops_a_prefill_between_chunks(tiny_model_dir):
    runner = ModelRunner(tiny_model_dir)
    runner.wait_until_loaded(120)
    needed = _chunks_needed(runner, LONG_PROMPT, 8)
    token = CancelToken()
    future = runner.submit(frames(8), LONG_PROMPT, max_tokens=8, cancel=token)
    queued = runner.submit(frames(2), "Describe the video.", max_tokens=4)  # behind it, with no token of its own
    at_close = _wait_for_chunks(runner, 1)
    runner.close()
    with pytest.raises(Cancelled, match="prefill"):
        future.result(timeout=120)
    assert runner.prefill_chunks <= at_close + 1 < needed
    assert token.cancelled  # closing cancels the request's own token: whoever shares it stops too
    with pytest.raises(Cancelled, match="before generation started"):
        queued.result(timeout=10)
    with pytest.raises(RunnerClosed):
        runner.submit(frames(1), "Describe the video.")


# == (c) the same answers as before ========================================================
@pytest.fixture(scope="module")
def unchunked_runner(tiny_model_dir):
    """The runner as it was: mlx_vlm's own prefill (2,048-token steps), no cancel checks inside it."""
    runner = ModelRunner(tiny_model_dir, prefill_chunk_tokens=None)
    runner.wait_until_loaded(120)
    yield runner
    runner.close()


@pytest.mark.parametrize("system,user,count", [
    (HIGHLIGHTS_SYSTEM, HIGHLIGHTS_USER, 8),
    (WORKOUT_SYSTEM, WORKOUT_USER, 8),
    (HIGHLIGHTS_SYSTEM, HIGHLIGHTS_USER, 1),
    (None, "Describe the video.", 4),
], ids=["highlights-8", "workout-8", "highlights-1", "no-system-4"])
def test_normal_prompts_give_the_same_answers_in_one_chunk(runner, unchunked_runner, system, user, count):
    assert runner.prompt_budget.prompt_tokens(system, user, count) - 1 <= model_runner.PREFILL_CHUNK_TOKENS
    images = frames(count, seed=count)
    start = runner.prefill_chunks
    new = runner.generate(images, user, system_prompt=system, max_tokens=32)
    assert runner.prefill_chunks - start == 1  # one chunk, as before: the very same computation
    assert new == unchunked_runner.generate(images, user, system_prompt=system, max_tokens=32)


def test_a_long_prompt_gives_the_same_answer_in_many_chunks(runner, unchunked_runner):
    prompt = "Describe every frame in detail. " * 60 + "\u6f22" * 300
    images = frames(8, seed=3)
    start = runner.prefill_chunks
    new = runner.generate(images, prompt, system_prompt=HIGHLIGHTS_SYSTEM, max_tokens=32)
    assert runner.prefill_chunks - start >= 3
    assert new == unchunked_runner.generate(images, prompt, system_prompt=HIGHLIGHTS_SYSTEM, max_tokens=32)
