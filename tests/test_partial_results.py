"""`GET /api/v1/video/results/<id>?partial=true`: the results so far while a job runs (issue 16 #3).

Real app, real tiny model. A partial result is the final result's code fed the answers kept so far, so
each one must be a prefix of the next and the last must equal the final result (timing fields apart).
"""
import time

import pytest

from tests.support.api import upload, wait_for_status
from tests.support.problems import assert_problem
from tests.support.results import comparable

LISTS = {"highlights": "all_analyses", "workout": "segment_analyses"}



@pytest.mark.parametrize("kind", ["highlights", "workout"])
def test_partial_results_grow_segment_by_segment_and_end_equal_to_the_final_result(client, videos, kind):
    response = upload(client, videos["long"], analysis_type=kind, segment_duration="3")
    session_id = response.get_json()["sessionId"]
    url = f"/api/v1/video/results/{session_id}"
    seen = []
    while True:
        answer = client.get(url + "?partial=true")
        assert answer.status_code == 200, answer.get_data(as_text=True)
        body = answer.get_json()
        assert set(body) == {"sessionId", "status", "analysisType", "data", "results", "partial"}
        assert body["data"] == body["results"] and body["analysisType"] == kind
        if not body["partial"]:
            break
        assert body["status"] in ("pending", "processing") and answer.headers["Retry-After"] == "1"
        seen.append(body["data"])
        time.sleep(0.01)  # the analysis process computes in the idle CPU class: leave it a core
    final = client.get(url).get_json()
    assert body == dict(final, partial=False)
    rows = LISTS[kind]
    counts = [len(result[rows]) for result in seen]
    assert counts == sorted(counts), "a partial result lost segments"
    assert any(0 < count < 30 for count in counts), f"no partial result was seen mid-job: {counts}"
    for result in seen:
        done = result["total_segments_analyzed"]
        assert done == len(result[rows])
        assert result[rows] == final["data"][rows][:done]
        if done == final["data"]["total_segments_analyzed"]:
            assert comparable(result) == comparable(final["data"])
        assert result["video"] == final["data"]["video"] and result["settings"] == final["data"]["settings"]


def test_without_partial_an_unfinished_session_still_answers_400(client, videos):
    session_id = upload(client, videos["long"], segment_duration="1").get_json()["sessionId"]
    response = client.get(f"/api/v1/video/results/{session_id}?partial=false")
    problem = assert_problem(response, 400)
    assert "?partial=true" in problem["error"] and problem["sessionStatus"] in ("pending", "processing")
    client.post(f"/api/v1/video/cancel/{session_id}")


def test_an_ended_session_without_results_answers_400_even_when_partial_is_asked(client, videos):
    session_id = upload(client, videos["long"], segment_duration="1").get_json()["sessionId"]
    wait_for_status(client, session_id, statuses=("processing",))
    assert client.post(f"/api/v1/video/cancel/{session_id}").status_code == 200
    problem = assert_problem(client.get(f"/api/v1/video/results/{session_id}?partial=true"), 400)
    assert problem["sessionStatus"] == "cancelled"


@pytest.mark.parametrize("value", ["yes", "1", "", "true;drop"])
def test_a_partial_that_is_not_true_or_false_is_a_400_naming_it(client, videos, value):
    session_id = upload(client, videos["short"]).get_json()["sessionId"]
    problem = assert_problem(client.get(f"/api/v1/video/results/{session_id}?partial={value}"), 400)
    assert problem["field"] == "partial" and "true or false" in problem["error"]
