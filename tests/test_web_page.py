"""The web page at /, driven in Debian's headless Chromium through selenium and chromedriver.

The browser, the app on the marker model and the helpers that drive the page are
shared with the other page tests (tests/conftest.py, tests/support/browser.py).
"""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

import video_analysis.web
from tests.support.api import serve, stored_entries
from tests.support.browser import (
    WAIT, all_by_testid, api, assert_fits_a_phone, assert_seeks_to, by_id, by_testid, choose, console_errors,
    open_page, screenshot, session_id, set_field, wait_for_player, wait_for_results, wait_until)
from video_analysis.engine.parameters import HighlightsParameters
from video_analysis.web.services import EXTENSION_KEY
from tools.synthetic_video import Marker, still_video, write_video

STATIC = Path(video_analysis.web.__file__).parent / "static"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """WebM (VP8) clips, which Chromium plays; an MP4 for the cancel test does not need playing."""
    root = tmp_path_factory.mktemp("web-videos")
    # The marker model answers "squat" for a red square, "push-up" for a blue one,
    # and 9/10 for a white one (2/10 without): what the page shows is known.
    return {
        "workout": write_video(str(root / "workout clip.webm"), duration=6, fps=10,
                               markers=[Marker(0, 2, "red"), Marker(2, 4, "blue")]),
        "highlights": write_video(str(root / "match.webm"), duration=6, fps=10, size=(320, 180),
                                  markers=[Marker(1, 2), Marker(3, 4)]),
        "plain": write_video(str(root / "plain.webm"), duration=6, fps=10, size=(320, 180)),
        # A fixed camera on a still picture, a bright square from 6 s to 8 s: with 2 s segments, frame selection
        # "changes" sends one frame where the picture changed and reuses the answer where it did not.
        "still": still_video(str(root / "still.webm"), 12, 10, marked_at=[(6.0, 8.0)]),
    }


# -- the tests ---------------------------------------------------------------------------
def test_a_workout_upload_shows_progress_steps_on_a_timeline_and_seeks(browser, marker_server, clips):
    """The marker model end to end: upload, progress to 100, steps table, timeline marks, seeking."""
    live_server = marker_server
    open_page(browser, live_server)
    choose(browser, clips["workout"], "workout")
    assert not browser.find_element("name", "min_significance").is_displayed()  # highlights-only field
    assert browser.find_element("name", "segment_duration").get_attribute("value") == "15"  # workout default
    set_field(browser, "segment_duration", 2)
    assert "workout clip.webm" in by_testid(browser, "drop-zone").text
    by_testid(browser, "start").click()

    sid = session_id(browser)
    wait_for_results(browser)
    assert by_testid(browser, "upload-progress").get_attribute("value") == "100"
    status_code, status = api(live_server, f"status/{sid}")
    assert status_code == 200 and status["status"] == "completed"
    assert by_testid(browser, "status-message").text.startswith("Done: 3 segments analyzed")
    assert not by_testid(browser, "cancel").is_displayed()

    _, results = api(live_server, f"results/{sid}")
    steps = results["data"]["exercise_steps"]
    # Red square for 0-2 s, blue for 2-4 s, nothing after: two steps, and rest is not a step.
    assert [(s["exercise_name"], s["start_timestamp"], s["end_timestamp"]) for s in steps] == [
        ("squat", 0.0, 2.0), ("push-up", 2.0, 4.0)]
    rows = all_by_testid(browser, "step-item")
    marks = all_by_testid(browser, "timeline-mark")
    assert len(rows) == len(marks) == len(steps) >= 1
    for row, step in zip(rows, steps):
        assert step["exercise_name"] in row.text and step["timestamp_formatted"] in row.text
        assert float(row.get_attribute("data-start")) == step["start_timestamp"]
    # Marks sit where their steps are on the video's duration.
    timeline = by_testid(browser, "timeline")
    for mark, step in zip(marks, steps):
        left = (mark.rect["x"] - timeline.rect["x"]) / timeline.rect["width"]
        assert left == pytest.approx(step["start_timestamp"] / 6.0, abs=0.02)
    assert all_by_testid(browser, "highlight-item") == [] or not all_by_testid(browser, "highlight-item")[0].is_displayed()

    wait_for_player(browser, 6.0)
    assert_seeks_to(browser, rows[-1], steps[-1]["start_timestamp"])
    assert_seeks_to(browser, marks[0], steps[0]["start_timestamp"])
    button = rows[-1].find_element("css selector", "button")
    assert_seeks_to(browser, button, steps[-1]["start_timestamp"], activate="keyboard")
    assert console_errors(browser) == []
    screenshot(browser, "web-results.png")

    assert_fits_a_phone(browser, "the results view")
    screenshot(browser, "web-results-phone.png", width=375)


def test_highlights_are_listed_best_first_marked_and_seekable(browser, marker_server, clips):
    """White squares at 1-2 s and 3-4 s: the marker model scores those segments 9/10, the rest 2/10."""
    live_server = marker_server
    open_page(browser, live_server)
    choose(browser, clips["highlights"], "highlights", min_significance=6, segment_duration=1)
    assert browser.find_element("name", "max_highlights").get_attribute("value") == "10"
    by_testid(browser, "start").click()
    sid = session_id(browser)
    wait_for_results(browser)

    _, results = api(live_server, f"results/{sid}")
    highlights = results["data"]["highlights"]
    assert [(h["timestamp_formatted"], h["significance_score"]) for h in highlights] == [
        ("00:01-00:02", 9), ("00:03-00:04", 9)]
    items = all_by_testid(browser, "highlight-item")
    marks = all_by_testid(browser, "timeline-mark")
    assert len(items) == len(marks) == 2
    for item, highlight in zip(items, highlights):
        text = item.text
        assert highlight["timestamp_formatted"] in text and "9/10" in text
    assert "{" not in by_testid(browser, "results").text

    wait_for_player(browser, 6.0)
    assert_seeks_to(browser, items[1], 3.0)
    assert "is-current" in items[1].get_attribute("class")
    assert_seeks_to(browser, marks[0], 1.0)
    assert_seeks_to(browser, items[0], 1.0, activate="keyboard")
    # Marks sit where their highlights are on the video's duration.
    timeline = by_testid(browser, "timeline")
    for mark, highlight in zip(marks, highlights):
        left = (mark.rect["x"] - timeline.rect["x"]) / timeline.rect["width"]
        assert left == pytest.approx(highlight["start_time"] / 6.0, abs=0.02)
    screenshot(browser, "web-results-highlights.png")

    # Every segment, with its score, is one click away.
    details = browser.find_element("id", "segments")
    details.find_element("css selector", "summary").click()
    rows = details.find_elements("css selector", "tbody tr")
    assert len(rows) == 6 and "9/10" in rows[1].text and "2/10" in rows[0].text
    assert "00:01-00:02" in rows[1].text  # written by the page, as the server writes its times

    # Starting over deletes the session on the server.
    browser.find_element("id", "new-analysis").click()
    wait_until(browser, lambda d: api(live_server, f"status/{sid}")[0] == 404, "the old session was not cleaned up")
    assert not by_testid(browser, "results").is_displayed()
    assert console_errors(browser) == []


def test_no_highlights_found_is_said_plainly(browser, marker_server, clips):
    """No white square anywhere: every segment scores 2/10, under the minimum of 6."""
    open_page(browser, marker_server)
    choose(browser, clips["plain"], "highlights", segment_duration=1)
    by_testid(browser, "start").click()
    wait_for_results(browser)
    assert all_by_testid(browser, "highlight-item") == [] and all_by_testid(browser, "timeline-mark") == []
    results_text = by_testid(browser, "results").text
    assert "No highlights found" in results_text and "at least 6/10" in results_text


# -- how each segment's answer was got (frame selection) -----------------------------------------
def frames_sent(row):
    """What the segments table says of a row: the frames sent, or the segment whose answer it repeats."""
    if row["reused_from"] is not None:
        return f"same as segment {row['reused_from']}"
    if row["frames_analyzed"] is None:
        return "not recorded"
    return f"{row['frames_analyzed']} frame" + ("" if row["frames_analyzed"] == 1 else "s")


def segment_rows(driver):
    """The segments table, opened: each row's number and what its frames cell says."""
    details = driver.find_element("id", "segments")
    if not details.get_attribute("open"):
        details.find_element("css selector", "summary").click()
    return driver.execute_script("""
        return Array.prototype.map.call(document.querySelectorAll('#segments-body tr'), function (tr) {
          return [tr.cells[0].textContent, tr.querySelector('[data-testid=segment-frames]').textContent];
        });""")


def test_frame_selection_chosen_on_the_form_reaches_the_job(browser, marker_server, clips):
    """'even' chosen on the form: on a still video, where 'changes' would send one frame and reuse answers,
    every segment is asked with all its frames, and the table says so."""
    open_page(browser, marker_server)
    assert form_field(browser, "frame_selection")["value"] == "changes"  # the server's default, shown
    choose(browser, clips["still"], "highlights", segment_duration=2, frames_per_segment=4)
    choose_option(browser, "frame_selection", "even")
    by_testid(browser, "start").click()
    sid = session_id(browser)
    wait_for_results(browser)

    _, results = api(marker_server, f"results/{sid}")
    data = results["data"]
    assert (data["settings"]["frame_selection"], data["settings"]["segmentation"]) == ("even", "fixed")
    rows = data["all_analyses"]
    assert len(rows) == 6
    assert [(r["frames_analyzed"], r["reused_from"]) for r in rows] == [(4, None)] * 6
    assert segment_rows(browser) == [[str(n), "4 frames"] for n in range(1, 7)]
    assert console_errors(browser) == []


def test_the_segments_table_says_which_answers_were_reused(browser, marker_server, clips):
    """The same still video on the default 'changes': one frame where the picture changed, and segments that
    show the same picture as the one before say whose answer they repeat."""
    open_page(browser, marker_server)
    choose(browser, clips["still"], "highlights", segment_duration=2, frames_per_segment=4)
    by_testid(browser, "start").click()
    sid = session_id(browser)
    wait_for_results(browser)

    _, results = api(marker_server, f"results/{sid}")
    data = results["data"]
    assert data["settings"]["frame_selection"] == "changes"
    rows = data["all_analyses"]
    # Still from 0 to 6 s (segments 1-3), the square from 6 to 8 s (segment 4), still again (5-6).
    assert [(r["frames_analyzed"], r["reused_from"]) for r in rows] == [
        (1, None), (0, 1), (0, 1), (1, None), (1, None), (0, 5)]
    assert segment_rows(browser) == [
        ["1", "1 frame"], ["2", "same as segment 1"], ["3", "same as segment 1"],
        ["4", "1 frame"], ["5", "1 frame"], ["6", "same as segment 5"]]
    # A reused row shows the answer it repeats.
    answers = browser.execute_script(TABLE_TEXT, "#segments-body tr")
    assert [row[-1] for row in answers] == [r["analysis"] for r in rows] and answers[1][-1] == answers[0][-1]
    assert "{" not in by_testid(browser, "results").text
    screenshot(browser, "web-results-reused.png")
    assert_fits_a_phone(browser, "the segments table")
    assert console_errors(browser) == []


def test_cancelling_a_long_job(browser, live_server, videos):
    open_page(browser, live_server)
    choose(browser, videos["long"], "highlights", segment_duration=1)
    by_testid(browser, "start").click()
    sid = session_id(browser)
    cancel = by_testid(browser, "cancel")
    assert cancel.is_displayed()
    wait_until(browser, lambda d: "of 90" in by_testid(d, "status-message").text,  # "Analyzing segment N of 90"
               "the page never showed the analysis running")
    assert float(by_testid(browser, "progress").get_attribute("value")) > 0
    wait_until(browser, lambda d: by_testid(d, "partial-note").is_displayed(), "no results so far were shown")
    cancel.click()

    wait_until(browser, lambda d: "cancelled" in by_testid(d, "status-message").text.lower(),
               "the page never said the analysis was cancelled")
    assert browser.find_element("id", "main").get_attribute("data-state") == "cancelled"
    assert float(by_testid(browser, "progress").get_attribute("value")) < 100
    assert not by_testid(browser, "cancel").is_displayed()
    # What was analyzed before the cancel stays on the page, and says it is all there will be.
    assert by_testid(browser, "results").is_displayed()
    assert re.fullmatch(r"Partial results: \d+ of 90 segments\. The analysis was cancelled, so no more will come\.",
                        by_testid(browser, "partial-note").text), by_testid(browser, "partial-note").text
    assert by_id(browser, "new-analysis").is_displayed()
    status_code, status = api(live_server, f"status/{sid}")
    assert status_code == 200 and status["status"] == "cancelled"


def test_an_invalid_file_shows_the_api_error_sentence(browser, live_server, tmp_path):
    fake = tmp_path / "x.mp4"
    fake.write_text("this is not a video\n" * 50)
    with open(fake, "rb") as handle:
        answer = requests.post(f"{live_server}/api/v1/video/upload", files={"video": ("x.mp4", handle)}, timeout=10)
    assert answer.status_code == 415
    sentence = answer.json()["error"]

    open_page(browser, live_server)
    by_testid(browser, "start").click()  # nothing chosen yet: the page says so without asking the server
    assert "Choose a video first" in by_testid(browser, "error").text

    by_testid(browser, "file-input").send_keys(str(fake))
    by_testid(browser, "start").click()
    error = by_testid(browser, "error")
    wait_until(browser, lambda d: error.is_displayed() and error.text.strip() == sentence,
               f"the error area never showed the API's sentence {sentence!r}")
    assert "{" not in error.text and '"status"' not in error.text and "problem" not in error.text
    assert browser.find_element("id", "main").get_attribute("data-state") == "failed"
    assert not by_testid(browser, "results").is_displayed()


def test_a_dropped_file_is_chosen(browser, live_server):
    """Drag and drop onto the drop zone, simulated with a DataTransfer holding a File."""
    open_page(browser, live_server)
    browser.execute_script("""
        var zone = document.querySelector('[data-testid=drop-zone]');
        var data = new DataTransfer();
        data.items.add(new File(['not really a video'], 'dropped clip.webm', {type: 'video/webm'}));
        ['dragenter', 'dragover', 'drop'].forEach(function (type) {
          zone.dispatchEvent(new DragEvent(type, {dataTransfer: data, bubbles: true, cancelable: true}));
        });
    """)
    assert "dropped clip.webm" in by_testid(browser, "drop-zone").text
    assert browser.execute_script("return document.querySelector('[data-testid=file-input]').files[0].name") == \
        "dropped clip.webm"
    by_testid(browser, "start").click()  # the server refuses it, and the page says why
    wait_until(browser, lambda d: by_testid(d, "error").is_displayed(), "no error for a dropped non-video")
    assert "video" in by_testid(browser, "error").text


# -- the settings' defaults and limits come from the server ---------------------------------
# Fields under "Advanced" stay empty, which the server reads as its default.
ADVANCED = {"max_tokens", "system_prompt", "user_prompt"}


def select_type(driver, analysis_type):
    from selenium.webdriver.support.ui import Select

    Select(by_testid(driver, "analysis-type")).select_by_value(analysis_type)


def form_field(driver, name):
    """What the page shows for one setting: its value and limits, whether it is visible, its hint."""
    return driver.execute_script("""
        var input = document.querySelector('#analysis-form [name="' + arguments[0] + '"]');
        var hint = document.getElementById(input.getAttribute('aria-describedby'));
        return {value: input.value, checked: input.type === 'checkbox' ? input.checked : null,
                min: input.getAttribute('min'), max: input.getAttribute('max'),
                step: input.getAttribute('step'), maxlength: input.getAttribute('maxlength'),
                shown: input.offsetParent !== null,
                hint: hint ? hint.textContent : null,
                options: input.tagName === 'SELECT'
                  ? Array.prototype.map.call(input.options, function (o) { return o.value; }) : null};
    """, name)


def choose_option(driver, name, value):
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element("name", name)).select_by_value(value)


def choice_texts(driver, name):
    return [option.text for option in driver.find_element("name", name).find_elements("tag name", "option")]


def expected_field(name, schema):
    """What the page must show for a field the OpenAPI document describes with `schema`."""
    if schema.get("type") == "boolean":  # a checkbox; the page asks for a reel whatever the API's default
        return {"value": "true", "checked": True if name == "reel" else schema["default"], "min": None, "max": None,
                "step": None, "maxlength": None, "shown": True, "hint": form_hint_words(name), "options": None}
    if "enum" in schema:  # a choice: the document's values, in its order, the default chosen; no limits
        return {"value": schema["default"], "checked": None, "min": None, "max": None, "step": None, "maxlength": None,
                "shown": True, "hint": form_hint_words(name), "options": schema["enum"]}
    if "anyOf" in schema:  # optional text: nothing to fill in, no numbers, at most maxLength characters
        (text,) = [option for option in schema["anyOf"] if option.get("type") == "string"]
        return {"value": "", "checked": None, "min": None, "max": None, "step": None,
                "maxlength": str(text["maxLength"]),
                "shown": True, "hint": None, "options": None}
    low, high = f"{schema['minimum']:g}", f"{schema['maximum']:g}"
    return {"value": "" if name in ADVANCED else f"{schema['default']:g}", "checked": None, "min": low, "max": high,
            "step": "1" if schema["type"] == "integer" else "any", "maxlength": None, "shown": True,
            "hint": f"{low}–{high}" + form_hint_words(name), "options": None}


def form_hint_words(name):
    """The page's own words after the limits (index.html), as the page has always written them."""
    return {"min_significance": ". A segment needs at least this score.", "max_highlights": ", best first.",
            "segment_duration": " seconds per analyzed piece.", "frames_per_segment": " frames the model looks at.",
            "max_tokens": ". Empty uses the server's default.",
            "segmentation": "Where each analyzed piece starts.",
            "frame_selection": "Skipping repeats is faster on still footage.",
            "reel": "One video of what is found, in time order, to watch here or download.",
            "reel_seconds_per_step": " seconds of each step at most."}[name]


def test_the_settings_show_the_defaults_and_limits_the_server_documents(browser, make_app):
    app = make_app()
    document = app.test_client().get("/api/v1/openapi.json").get_json()
    highlights = document["components"]["schemas"]["HighlightsParameters"]["properties"]
    workout = document["components"]["schemas"]["WorkoutParameters"]["properties"]
    # Numbers unlike the real ones: a page that kept its own would show those instead.
    highlights["segment_duration"].update(default=7, maximum=300)
    workout["segment_duration"].update(default=12, maximum=300)
    highlights["min_significance"].update(default=4, minimum=2)
    highlights["max_highlights"].update(default=5)
    for fields in (highlights, workout):
        fields["frames_per_segment"].update(default=3, maximum=32)
        fields["max_tokens"].update(maximum=512)
        fields["user_prompt"]["anyOf"][0].update(maxLength=5000)
    # Choices in another order, another default, and a value the page has no words for (it shows as itself).
    for fields in (highlights, workout):
        fields["frame_selection"].update(default="even", enum=["even", "changes"])
    workout["segmentation"].update(default="scenes", enum=["scenes", "fixed", "keyframes"])
    workout["reel_seconds_per_step"].update(default=9, maximum=30)
    app.view_functions["openapi"] = lambda: document

    with serve(app) as base_url:
        open_page(browser, base_url)
        assert by_id(browser, "analysis-form").get_attribute("data-parameters") == "ready"
        assert not by_testid(browser, "parameters-error").is_displayed()
        browser.find_element("css selector", ".advanced summary").click()
        every_field = list(dict.fromkeys([*highlights, *workout]))
        # There and back: fields nobody touched take each type's defaults.
        for analysis_type, fields in (("highlights", highlights), ("workout", workout), ("highlights", highlights)):
            select_type(browser, analysis_type)
            for name in every_field:
                if name in fields:
                    assert form_field(browser, name) == expected_field(name, fields[name]), (analysis_type, name)
                else:
                    assert not form_field(browser, name)["shown"], (analysis_type, name)

        # The choices read in the page's words, but for the value it does not know.
        select_type(browser, "workout")
        assert choice_texts(browser, "segmentation") == ["At scene cuts", "Fixed length", "keyframes"]
        assert choice_texts(browser, "frame_selection") == ["All, evenly spaced", "Only frames that change"]

        # What the user typed or chose survives a change of type; "Reset settings" brings back the type's default.
        select_type(browser, "highlights")
        set_field(browser, "segment_duration", 2)
        choose_option(browser, "frame_selection", "changes")
        browser.find_element("name", "reel").click()  # no reel, then
        select_type(browser, "workout")
        assert form_field(browser, "segment_duration")["value"] == "2"
        assert form_field(browser, "frame_selection")["value"] == "changes"  # not workout's "even"
        assert form_field(browser, "reel")["checked"] is False
        # A choice the other type does not offer gives way to that type's default.
        choose_option(browser, "segmentation", "keyframes")
        select_type(browser, "highlights")
        assert form_field(browser, "segmentation")["value"] == "fixed"
        select_type(browser, "workout")
        browser.find_element("id", "reset-settings").click()
        assert form_field(browser, "segment_duration")["value"] == "12"
        assert form_field(browser, "frame_selection")["value"] == "even"
        assert form_field(browser, "segmentation")["value"] == "scenes"
        assert form_field(browser, "reel")["checked"] is True
        select_type(browser, "highlights")
        assert form_field(browser, "segment_duration")["value"] == "7"
        assert console_errors(browser) == []


def test_without_the_document_the_page_says_so_and_the_server_defaults_apply(browser, make_app, videos):
    app = make_app()
    app.view_functions["openapi"] = lambda: ({"error": "Not today."}, 503)
    with serve(app) as base_url:
        open_page(browser, base_url)
        assert by_id(browser, "analysis-form").get_attribute("data-parameters") == "unavailable"
        note = by_testid(browser, "parameters-error")
        assert note.is_displayed() and "defaults and limits" in note.text and "HTTP 503" in note.text
        for name in ("min_significance", "max_highlights", "segment_duration", "frames_per_segment", "max_tokens"):
            field = form_field(browser, name)
            assert (field["value"], field["min"], field["max"]) == ("", None, None), (name, field)  # no guessing
        for name in ("segmentation", "frame_selection"):  # no choice guessed either: the server's default
            assert form_field(browser, name)["options"] == [""] and choice_texts(browser, name) == ["Server default"]
        assert form_field(browser, "reel")["checked"] is True  # shown as the page asks for it, and so sent

        # Empty fields are not sent, so the analysis runs on the server's defaults.
        choose(browser, videos["short"], "highlights")
        by_testid(browser, "start").click()
        sid = session_id(browser)
        wait_until(browser, lambda d: by_id(d, "main").get_attribute("data-state") == "completed",
                   "the analysis never completed")
        _, results = api(base_url, f"results/{sid}")
        defaults = HighlightsParameters()
        settings = results["data"]["settings"]
        assert (settings["segment_duration"], settings["min_significance"], settings["frames_per_segment"]) == (
            defaults.segment_duration, defaults.min_significance, defaults.frames_per_segment)
        assert (settings["segmentation"], settings["frame_selection"]) == (
            defaults.segmentation, defaults.frame_selection)
        assert settings["reel"] is True


# -- the modules ------------------------------------------------------------------------------
def test_the_modules_are_served_as_javascript_and_load_without_errors(browser, live_server):
    modules = {"/static/app.js", *(f"/static/js/{path.name}" for path in (STATIC / "js").glob("*.js"))}
    for path in sorted(modules):
        answer = requests.get(live_server + path, timeout=10)
        # A browser refuses to run a module script served with any other type.
        assert answer.status_code == 200, path
        assert answer.headers["Content-Type"].split(";")[0] in ("text/javascript", "application/javascript"), path

    open_page(browser, live_server)
    loaded = browser.execute_script(
        "return performance.getEntriesByType('resource').map(function (e) { return new URL(e.name).pathname; })")
    assert {path for path in loaded if path.endswith(".js")} == modules  # every module in js/ is in use
    assert by_id(browser, "analysis-form").get_attribute("data-parameters") == "ready"
    assert by_id(browser, "type-hint").text == "Scores every segment 1–10 and keeps the best ones."
    assert console_errors(browser) == []


def test_the_page_writes_the_times_the_server_does_not_send_as_the_server_would(browser, live_server):
    """Segment rows and the video's length are formatted by the page, so it must agree with video/timecode.py."""
    from video_analysis.video.timecode import Timecode, format_range

    pairs = [[0, 0], [1.9, 2.5], [59.99, 61], [599, 3599.9], [3599, 3600], [3661.5, 7322], [0, 36000.4]]
    open_page(browser, live_server)
    written = browser.execute_async_script("""
        var pairs = arguments[0], done = arguments[arguments.length - 1];
        import(arguments[1]).then(function (format) {
          done(pairs.map(function (p) { return [format.clockRange(p[0], p[1]), format.clock(p[1])]; }));
        }, function (error) { done(String(error)); });
    """, pairs, live_server + "/static/js/format.js")
    assert written == [[format_range(start, end), Timecode(end).clock()] for start, end in pairs]


# -- the model's state, before anyone uploads ---------------------------------------------------
def model_state(driver):
    line = by_testid(driver, "model-state")
    return line.get_attribute("data-model"), line.text


def health_reads(driver):
    """How many times the page has asked /health (the browser's own record of its requests)."""
    return driver.execute_script(
        "return performance.getEntriesByType('resource').filter(function (e) {"
        "  return new URL(e.name).pathname === '/health'; }).length")


def test_the_page_shows_the_model_loading_takes_an_upload_then_says_ready(browser, make_app, videos):
    app = make_app(own_analysis=True, wait_for_model=False)
    child = app.extensions[EXTENSION_KEY].analysis.pid
    # Stopped at once (spawning alone takes longer), the child holds its model load until it is continued:
    # the page sees the model loading however fast this machine loads it.
    os.kill(child, signal.SIGSTOP)
    try:
        with serve(app) as base_url:
            open_page(browser, base_url)
            wait_until(browser, lambda d: model_state(d)[0] == "loading", "the page never said the model is loading")
            assert model_state(browser)[1] == "Model loading… A video uploaded now waits until it is ready."
            # Start stays usable: the upload is taken, and its job waits for the model.
            choose(browser, videos["short"], "highlights", segment_duration=2)
            by_testid(browser, "start").click()
            sid = session_id(browser)
            wait_until(browser, lambda d: by_testid(d, "status-message").text == "Waiting for the model to load",
                       "the page never showed the job waiting for the model")
            os.kill(child, signal.SIGCONT)
            wait_until(browser, lambda d: model_state(d)[0] == "ready", "the page never said the model is ready",
                       timeout=60)
            ready_at, reads = time.monotonic(), health_reads(browser)
            assert model_state(browser)[1] == "Model ready: tiny-smolvlm on cpu."
            wait_until(browser, lambda d: by_id(d, "main").get_attribute("data-state") == "completed",
                       "the upload made while the model loaded never completed")
            assert api(base_url, f"status/{sid}")[1]["segmentsDone"] == 3
            # Once the model is ready the page asks /health no more (it asked every 3 s until then).
            time.sleep(max(0.0, ready_at + 3.5 - time.monotonic()))
            assert health_reads(browser) == reads > 1
            assert by_testid(browser, "start").is_enabled()
            assert console_errors(browser) == []
    finally:
        try:
            os.kill(child, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_a_model_that_cannot_load_is_said_before_anyone_uploads(browser, make_app, tmp_path, clips):
    empty = tmp_path / "no-model-here"
    empty.mkdir()
    app = make_app(MODEL=str(empty))
    health = app.test_client().get("/health").get_json()
    assert health["status"] == "degraded" and "no-model-here" in health["reason"]

    with serve(app) as base_url:
        open_page(browser, base_url)
        wait_until(browser, lambda d: model_state(d)[0] == "unavailable",
                   "the page never said the model cannot be loaded")
        state, text = model_state(browser)
        assert text.startswith(health["reason"]) and "uploads are off" in text
        assert str(tmp_path) not in text
        start = by_testid(browser, "start")
        assert not start.is_enabled()
        # The button says why it cannot be used, to a screen reader too.
        assert start.get_attribute("aria-describedby") == "model-state"
        by_testid(browser, "file-input").send_keys(clips["plain"])
        by_id(browser, "form-fields").find_element("name", "segment_duration").send_keys("\n")  # Enter submits nothing
        assert by_id(browser, "main").get_attribute("data-state") == "idle"
        assert stored_entries(app) == []


def test_a_model_the_hub_cannot_serve_says_when_the_server_tries_again(browser, make_app, monkeypatch, tmp_path):
    """No network for the model hub (HF_HUB_OFFLINE, an empty cache): the server tries again later, and until then
    refuses uploads; the page says why and when, in local time."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the analysis child inherits it
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    app = make_app(MODEL="test-org/not-in-the-cache", MODEL_RETRY_SECONDS=90, wait_for_model=False)
    with serve(app) as base_url:
        open_page(browser, base_url)
        wait_until(browser, lambda d: model_state(d)[0] == "retrying", "the page never said the load is tried again",
                   timeout=60)
        health = app.test_client().get("/health").get_json()
        reason, next_try = health["reason"], health["model"]["nextAttemptAt"]
        assert next_try in reason  # the server's own sentence on the next try, in UTC …
        why = reason[:reason.index(" The service tries again")]
        text = model_state(browser)[1]
        # … which the page says in local time, counting down.
        assert re.fullmatch(re.escape(why) + r" The server tries again at \d\d:\d\d:\d\d( [AP]M)? "
                            r"\(in (about 1 min|[1-9]\d s)\); uploads are off until then\.", text), text
        assert "set model to a local directory" in text.lower() and next_try not in text
        assert not by_testid(browser, "start").is_enabled()  # the server refuses uploads until its next try
        assert console_errors(browser) == []


# -- results that fill in as segments finish ---------------------------------------------------
# One look at the page, taken many times a second while the job runs: the state, the partial note, and
# whether every row seen before is still the same element at the same place (drawn in place, never rebuilt).
SAMPLE_TABLES = """
    var seen = window.__seenRows || (window.__seenRows = {segments: [], steps: []});
    function look(name, rows) {
      var kept = seen[name].every(function (row, i) { return rows[i] === row; });
      seen[name] = Array.prototype.slice.call(rows);
      return {count: rows.length, kept: kept};
    }
    var results = document.querySelector('[data-testid=results]');
    // The first step's row as results so far last drew it: the final results put its thumbnail in place.
    if (results.getAttribute('data-partial') === 'true') {
      window.__partialFirstStep = document.querySelector('[data-testid=step-item]');
    }
    return {state: document.getElementById('main').getAttribute('data-state'),
            shown: !results.hidden, partial: results.getAttribute('data-partial'),
            note: document.querySelector('[data-testid=partial-note]').textContent,
            segments: look('segments', document.querySelectorAll('#segments-body tr')),
            steps: look('steps', document.querySelectorAll('[data-testid=step-item]')),
            marks: document.querySelectorAll('[data-testid=timeline-mark]').length,
            thumbnails: document.querySelectorAll('[data-testid=thumbnail]').length,
            player: document.querySelector('[data-testid=player]').getAttribute('src')};
"""
# The text of each cell of each row of a table body, by CSS selector.
TABLE_TEXT = """
    return Array.prototype.map.call(document.querySelectorAll(arguments[0]), function (tr) {
      return Array.prototype.map.call(tr.cells, function (td) { return td.textContent; });
    });
"""


SEGMENTS = 150


def test_partial_results_fill_the_table_as_segments_finish(browser, marker_server, tmp_path):
    """150 one-second segments of red and blue squares in turn (about 3 s of work on the marker model, three
    polls or so): rows appear while the job runs, grow in place, and end as the completed result."""
    from video_analysis.video.timecode import format_range

    video = write_video(str(tmp_path / "long workout.webm"), duration=SEGMENTS, fps=2,
                        markers=[Marker(start, start + 2, "red" if start % 4 == 0 else "blue")
                                 for start in range(0, SEGMENTS, 2)])
    open_page(browser, marker_server)
    choose(browser, video, "workout", segment_duration=1, frames_per_segment=2)
    by_testid(browser, "start").click()
    sid = session_id(browser)

    samples = []
    deadline = time.monotonic() + 2 * WAIT
    while time.monotonic() < deadline:
        sample = browser.execute_script(SAMPLE_TABLES)
        samples.append(sample)
        if sample["state"] != "processing" and sample["state"] != "uploading":
            break
        time.sleep(0.05)
    assert samples[-1]["state"] == "completed", samples[-1]
    during = [s for s in samples if s["state"] == "processing" and s["shown"]]
    assert during, "no results were shown before the analysis completed"
    # While it runs the results say they are partial, with how many segments are in so far.
    for sample in during:
        assert sample["partial"] == "true" and re.fullmatch(
            rf"Partial results: \d+ of {SEGMENTS} segments so far; more appear as the analysis goes on\.", sample["note"]), sample
    assert any(0 < s["segments"]["count"] < SEGMENTS and s["steps"]["count"] > 0 and s["marks"] > 0 for s in during)
    # Rows only grow, and a row once shown stays the same element (the final results included);
    # the last step's row alone may be redrawn as its exercise goes on into the next segment.
    counts = [s["segments"]["count"] for s in samples if s["shown"]]
    assert counts == sorted(counts) and len(set(counts)) >= 2, counts
    assert all(s["segments"]["kept"] for s in samples), "a segment row shown before was rebuilt or moved"
    step_counts = [s["steps"]["count"] for s in samples if s["shown"]]
    assert step_counts == sorted(step_counts), step_counts
    # The player got the file once: drawing more results does not load it again.
    assert len({s["player"] for s in samples if s["shown"]}) == 1

    # The final table is the completed result.
    final = samples[-1]
    assert final["partial"] == "false" and not by_testid(browser, "partial-note").is_displayed()
    _, results = api(marker_server, f"results/{sid}")
    data = results["data"]
    assert data["total_segments_analyzed"] == SEGMENTS and len(data["exercise_steps"]) > 1
    assert browser.execute_script(TABLE_TEXT, "[data-testid=step-item]") == [
        [s["exercise_name"], s["timestamp_formatted"], f"{s['duration']:g}\u00a0s"] for s in data["exercise_steps"]]
    assert len(all_by_testid(browser, "timeline-mark")) == len(data["exercise_steps"])
    assert browser.execute_script(TABLE_TEXT, "#segments-body tr") == [
        [str(s["segment"]), format_range(s["start_time"], s["end_time"]), s["exercise"], frames_sent(s), s["analysis"]]
        for s in data["segment_analyses"]]
    assert by_id(browser, "segments-summary").text == f"Every analyzed segment ({SEGMENTS})"
    # Results so far have no thumbnails; the final ones do, put into the rows already there.
    assert all(s["thumbnails"] == 0 for s in during)
    first = urljoin(marker_server + "/", data["exercise_steps"][0]["thumbnailUrl"])
    wait_until(browser, lambda d: d.execute_script("""
        var row = document.querySelector('[data-testid=step-item]'), img = row.querySelector('[data-testid=thumbnail]');
        return row === window.__partialFirstStep && img.src === arguments[0] && img.complete && img.naturalWidth > 0;
    """, first), "the first step's row did not get its thumbnail in place")
    assert console_errors(browser) == []
