"""Uploads while the model loads (issue 16, item 4): taken, and their jobs wait for the model; a model that fails to
load fails the jobs that waited, with the reason; a model the Hugging Face Hub could not serve is loaded again after
a back-off, and /health says when. Real apps, real analysis processes, the real tiny model.
"""
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone

import requests

from tests.support.api import data_dir_entries, stored_entries, upload, wait_for_status
from tests.support.problems import assert_problem
from tools.service_process import REPO, free_port

WAITING = "Waiting for the model to load"
CJK_8_KIB = "\u6f22" * (8 * 1024 // 3)  # ~8,190 tokens on the tiny model: more than its context leaves


def health(client) -> dict:
    return client.get("/health").get_json()


def epoch(iso: str) -> float:
    return datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def first_health(base: str, timeout: float = 60.0) -> dict:
    """The first /health the service answers (it listens before its model has loaded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return requests.get(base + "/health", timeout=2).json()
        except requests.ConnectionError:
            assert time.monotonic() < deadline, "the service never answered"
            time.sleep(0.05)


def test_an_upload_right_after_the_service_starts_waits_for_the_model_and_completes(start_service, videos):
    server = start_service(ready=False)
    before = first_health(server.base)
    assert before["model"]["loaded"] is False and before["status"] == "healthy", before
    assert before["reason"] == "The model is still loading."
    with open(videos["short"], "rb") as handle:
        response = requests.post(server.base + "/api/v1/video/upload", files={"video": handle}, timeout=30)
    assert response.status_code == 202, response.text
    status_url = server.base + response.headers["Location"]
    status = requests.get(status_url, timeout=5).json()
    deadline = time.monotonic() + 30
    while status["status"] == "pending":  # a job thread takes it within milliseconds
        assert time.monotonic() < deadline, status
        status = requests.get(status_url, timeout=5).json()
    if not requests.get(server.base + "/health", timeout=5).json()["model"]["loaded"]:
        # Still loading after that status was read: the job was waiting for the model, and said so.
        assert (status["status"], status["currentStep"], status["message"]) == ("processing", "reading", WAITING)
    deadline = time.monotonic() + 120
    while status["status"] not in ("completed", "failed", "cancelled"):
        assert time.monotonic() < deadline, status
        time.sleep(0.1)
        status = requests.get(status_url, timeout=5).json()
    assert status["status"] == "completed", status
    assert status["message"] != WAITING and status["segmentsDone"] == status["segmentsTotal"] > 0
    after = requests.get(server.base + "/health", timeout=5).json()
    assert after["model"]["loaded"] is True and "reason" not in after


def test_a_legacy_request_sent_while_the_model_loads_waits_for_it_and_answers_200(make_app, videos):
    app = make_app(own_analysis=True, wait_for_model=False)
    client = app.test_client()
    assert health(client)["model"]["loaded"] is False
    response = upload(client, videos["short"], url="/analyze/highlights", min_significance="1")
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["success"] is True and body["analysis_type"] == "highlights"
    assert len(body["data"]["all_analyses"]) == body["data"]["total_segments_analyzed"] >= 1
    assert health(client)["model"]["loaded"] is True
    assert stored_entries(app) == []


def test_a_model_that_fails_to_load_fails_the_jobs_that_waited_with_the_reason_then_refuses_uploads(
        make_app, tmp_path, videos):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    app = make_app(MODEL=str(broken), wait_for_model=False)
    client = app.test_client()
    before = health(client)
    assert before["status"] == "healthy" and before["model"]["loaded"] is False  # loading, not failed yet
    response = upload(client, videos["short"])
    assert response.status_code == 202, response.get_data(as_text=True)
    assert "The model is still loading" in response.get_json()["message"]  # the model never loads here
    session_id = response.get_json()["sessionId"]
    final = wait_for_status(client, session_id)[-1]
    assert final["status"] == "failed" and final["currentStep"] == "failed"
    reason = health(client)["reason"]
    assert final["error"] == reason and "broken-model" in reason and "could not be loaded" in reason
    assert str(tmp_path) not in json.dumps(final)
    # Not a failure that goes away: no next try, and later uploads are refused at once with the reason.
    after = health(client)
    assert after["status"] == "degraded" and "nextAttemptAt" not in after["model"]
    for url, field in (("/api/v1/video/upload", "video"), ("/analyze/workout", "file")):
        problem = assert_problem(upload(client, videos["short"], url=url, field=field), 503)
        assert reason in problem["error"] and "MODEL" in problem["error"] and str(tmp_path) not in problem["error"]
    assert stored_entries(app) == [session_id]  # the failed job's upload stays until cleanup; the refused left nothing


def test_prompts_too_long_sent_while_the_model_loads_fail_the_job_with_the_sentence_the_upload_would_give(
        make_app, videos):
    app = make_app(own_analysis=True, wait_for_model=False)
    client = app.test_client()
    assert health(client)["model"]["loaded"] is False
    response = upload(client, videos["short"], user_prompt=CJK_8_KIB)
    assert response.status_code == 202, response.get_data(as_text=True)  # not counted yet: no tokenizer
    session_id = response.get_json()["sessionId"]
    # A legacy request waits for the model too, and its job's check answers as the upload's would: 400.
    legacy = assert_problem(upload(client, videos["short"], url="/analyze/highlights", user_prompt=CJK_8_KIB), 400)
    assert legacy["success"] is False and legacy["error"].startswith("'user_prompt' is ")
    final = wait_for_status(client, session_id)[-1]
    assert final["status"] == "failed" and final["segmentsDone"] == 0  # checked before any segment
    # Now that the model is loaded, the same upload is refused up front, with the very same sentence.
    upfront = assert_problem(upload(client, videos["short"], user_prompt=CJK_8_KIB), 400)
    assert upfront["field"] == "user_prompt"
    assert final["error"] == upfront["error"] == legacy["error"]
    assert stored_entries(app) == [session_id]


def test_a_model_the_hub_cannot_serve_is_loaded_again_after_a_back_off_and_health_says_when(
        start_service, tmp_path, videos):
    server = start_service(model_dir="test-org/not-in-the-cache", ready=False,
                           env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
                                "MODEL_RETRY_SECONDS": "3"})
    first = server.wait_ready()  # returns at the first "degraded"
    assert first["status"] == "degraded" and first["model"]["loaded"] is False
    assert first["model"]["failedAttempts"] == 1
    reason = first["reason"]
    assert "set model to a local directory" in reason.lower() and "HF_HUB_OFFLINE" in reason, reason
    next_try = epoch(first["model"]["nextAttemptAt"])
    assert time.time() < next_try <= time.time() + 3.5
    documented = requests.get(server.base + "/api/v1/openapi.json", timeout=5).json()["components"]["schemas"]["Health"]
    assert set(first) <= set(documented["properties"])
    assert set(first["model"]) <= set(documented["properties"]["model"]["properties"])
    # Until that try, uploads are refused with the reason and when to come back.
    with open(videos["short"], "rb") as handle:
        response = requests.post(server.base + "/api/v1/video/upload", files={"video": handle}, timeout=30)
    assert response.status_code == 503 and 1 <= int(response.headers["Retry-After"]) <= 3
    problem = response.json()
    assert problem["title"] == "Model unavailable" and reason.split(" The service")[0] in problem["error"]
    assert data_dir_entries(server.data_dir) == []
    # The second try happens when due (in a new analysis process) and fails the same way: the next pause is 6 s.
    deadline = time.monotonic() + 60
    while True:
        second = requests.get(server.base + "/health", timeout=5).json()
        if second["model"].get("failedAttempts") == 2 and "nextAttemptAt" in second["model"]:
            break
        assert time.monotonic() < deadline, second
        time.sleep(0.1)
    assert second["status"] == "degraded" and second["reason"].startswith(reason.split(" The service tries")[0])
    assert epoch(second["model"]["nextAttemptAt"]) - next_try >= 5.99


def test_only_a_hub_that_cannot_be_reached_is_worth_another_try(tmp_path, tiny_model_dir):
    """No network (a refused connection here), and two models that no wait will mend: a directory that is not a
    model, and a path that does not exist."""
    not_a_model = tmp_path / "not-a-model"
    not_a_model.mkdir()
    (not_a_model / "config.json").write_text("{not json")
    script = ("import json, sys\n"
              "from video_analysis.model.errors import HubUnreachable, ModelLoadError\n"
              "from video_analysis.model.loading import load_model\n"
              "found = {}\n"
              "for ref in sys.argv[1:]:\n"
              "    try:\n"
              "        load_model(ref, ref)\n"
              "    except HubUnreachable as error:\n"
              "        found[ref] = ['again', str(error)]\n"
              "    except ModelLoadError as error:\n"
              "        found[ref] = ['final', str(error)]\n"
              "print(json.dumps(found))\n")
    environment = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{free_port()}", HF_HOME=str(tmp_path / "hf-home"),
                       PYTHONPATH=REPO)
    environment.pop("HF_HUB_OFFLINE", None)
    refs = ["test-org/not-in-the-cache", str(not_a_model), "/no/such/model"]
    done = subprocess.run([sys.executable, "-c", script, *refs], capture_output=True, text=True, env=environment,
                          cwd=REPO, timeout=120)
    found = json.loads(done.stdout.strip().splitlines()[-1])
    verdict, sentence = found["test-org/not-in-the-cache"]
    assert verdict == "again" and "could not be reached" in sentence and "Connection refused" in sentence
    assert "set MODEL to a local directory" in sentence
    assert found[str(not_a_model)][0] == "final" and found["/no/such/model"][0] == "final"
    assert "the directory /no/such/model does not exist" in found["/no/such/model"][1]
