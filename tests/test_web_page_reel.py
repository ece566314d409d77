"""The web page's thumbnails and reel (issue 19), in headless Chromium on the marker model.

White squares at 1-2 s and 3-4 s of a 6 s clip, 1 s segments: the marker model scores those two
segments 9/10 and the rest 2/10, so the highlights (and the reel of them, 2 s) are known in advance.
The browser, the app and the helpers are the other page tests' (tests/conftest.py, tests/support/browser.py).
"""
from __future__ import annotations

from urllib.parse import urljoin

import cv2
import numpy as np
import pytest
import requests

from tests.support.api import serve
from tests.support.browser import (
    all_by_testid, api, assert_fits_a_phone, by_id, by_testid, choose, console_errors, open_page, screenshot,
    session_id, wait_for_player, wait_for_results, wait_until)
from tools.synthetic_video import Marker, write_video


@pytest.fixture(scope="module")
def reel_clips(tmp_path_factory):
    """WebM (VP8) clips, which Chromium plays."""
    root = tmp_path_factory.mktemp("reel-videos")
    return {
        "highlights": write_video(str(root / "match.webm"), duration=6, fps=10, size=(320, 180),
                                  markers=[Marker(1, 2), Marker(3, 4)]),
        # Red (squat) for 0-2 s, blue (push-up) for 2-4 s: two 2 s steps.
        "workout": write_video(str(root / "workout clip.webm"), duration=6, fps=10,
                               markers=[Marker(0, 2, "red"), Marker(2, 4, "blue")]),
    }


# Every thumbnail inside each element the selector finds: what it shows and whether it loaded.
THUMBNAILS = """
    return Array.prototype.map.call(document.querySelectorAll(arguments[0]), function (holder) {
      return Array.prototype.map.call(holder.querySelectorAll('[data-testid=thumbnail]'), function (img) {
        return {src: img.src, alt: img.alt, loading: img.loading, complete: img.complete,
                width: img.naturalWidth, height: img.naturalHeight};
      });
    });
"""
REEL_PLAYER = """
    var v = document.querySelector('[data-testid=reel-player]');
    return {src: v.currentSrc, readyState: v.readyState, duration: v.duration, time: v.currentTime,
            paused: v.paused, error: v.error && v.error.code};
"""
# The text of each cell of each row a selector finds.
CELL_TEXT = """
    return Array.prototype.map.call(document.querySelectorAll(arguments[0]), function (tr) {
      return Array.prototype.map.call(tr.cells, function (td) { return td.textContent; });
    });
"""
# What has the keyboard focus: its hook, or its id, or its tag.
FOCUSED = """
    var e = document.activeElement;
    return e.getAttribute('data-testid') || e.id || e.tagName.toLowerCase();
"""


def thumbnails_in(driver, selector):
    return driver.execute_script(THUMBNAILS, selector)


def loaded_thumbnails(driver, selector, count):
    """The thumbnails of the `count` elements `selector` finds, once every one of them has loaded."""
    def loaded(d):
        found = thumbnails_in(d, selector)
        return len(found) == count and all(len(images) == 1 and images[0]["complete"] and images[0]["width"] > 0
                                           for images in found)
    wait_until(driver, loaded, f"the thumbnails of {selector} never all loaded: {thumbnails_in(driver, selector)}")
    return [images[0] for images in thumbnails_in(driver, selector)]


def jpeg_size(url):
    """(width, height) of the JPEG the server serves at `url`."""
    answer = requests.get(url, timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "image/jpeg", url
    picture = cv2.imdecode(np.frombuffer(answer.content, np.uint8), cv2.IMREAD_COLOR)
    return picture.shape[1], picture.shape[0]


def press_key(driver, key):
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(driver).send_keys(key).perform()


def press_tab(driver):
    """Tab, as a person presses it; returns what has the focus then."""
    from selenium.webdriver.common.keys import Keys

    press_key(driver, Keys.TAB)
    return driver.execute_script(FOCUSED)


def run_highlights(driver, base_url, clip, **params):
    """Uploads `clip` for highlights through the page open at `base_url` and waits for the results; returns the
    session's `data`."""
    choose(driver, clip, "highlights", min_significance=6, segment_duration=1, **params)
    by_testid(driver, "start").click()
    sid = session_id(driver)
    wait_for_results(driver)
    wait_until(driver, lambda d: by_id(d, "main").get_attribute("data-state") == "completed",
               "the page never said the analysis completed")
    status_code, results = api(base_url, f"results/{sid}")
    assert status_code == 200
    return results["data"]


def test_each_highlight_shows_its_thumbnail_and_the_reel_plays(browser, marker_server, reel_clips):
    """The form asks for a reel unless told not to; rows and marks show the server's thumbnails; a second player
    plays the reel from the server, with a link to download it."""
    open_page(browser, marker_server)
    reel_box = browser.find_element("name", "reel")
    assert reel_box.is_displayed() and reel_box.is_selected()  # the page asks for a reel by default
    data = run_highlights(browser, marker_server, reel_clips["highlights"])
    highlights = data["highlights"]
    assert [(h["timestamp_formatted"], h["significance_score"]) for h in highlights] == [
        ("00:01-00:02", 9), ("00:03-00:04", 9)]
    # The form sent reel=true: the session has a reel, of both highlights (1 s each).
    assert data["settings"]["reel"] is True and data["reelUrl"]
    assert data["reelDuration"] == pytest.approx(2.0, abs=0.25) and data["reelSize"] > 0

    # Each row and each mark: one thumbnail, the result's own, loaded, lazily, and said in words.
    page = marker_server + "/"
    rows = loaded_thumbnails(browser, "[data-testid=highlight-item]", len(highlights))
    marks = loaded_thumbnails(browser, "[data-testid=timeline-mark]", len(highlights))
    for index, (row, mark, highlight) in enumerate(zip(rows, marks, highlights)):
        assert highlight["thumbnailUrl"], highlight
        url = urljoin(page, highlight["thumbnailUrl"])
        assert row["src"] == mark["src"] == url
        # The picture shown is the server's JPEG, at its own size.
        assert (row["width"], row["height"]) == (mark["width"], mark["height"]) == jpeg_size(url)
        assert row["loading"] == mark["loading"] == "lazy"
        assert row["alt"] == mark["alt"] == f"Frame from highlight {index + 1}, {highlight['timestamp_formatted']}"
    # A row's thumbnail shows at once; a mark's only on hover or focus.
    items = all_by_testid(browser, "highlight-item")
    assert all(item.find_element("css selector", "[data-testid=thumbnail]").is_displayed() for item in items)
    assert not any(mark.find_element("css selector", "[data-testid=thumbnail]").is_displayed()
                   for mark in all_by_testid(browser, "timeline-mark"))

    # The reel: its own player, on the server's file, which plays and seeks.
    reel_url = urljoin(page, data["reelUrl"])
    player = by_testid(browser, "reel-player")
    assert player.is_displayed() and player.get_attribute("controls") is not None
    wait_until(browser, lambda d: d.execute_script(REEL_PLAYER)["readyState"] >= 1,
               f"the reel player never loaded the reel: {browser.execute_script(REEL_PLAYER)}")
    reel = browser.execute_script(REEL_PLAYER)
    assert reel["src"] == reel_url and reel["error"] is None
    assert reel["duration"] == pytest.approx(data["reelDuration"], abs=0.15)
    browser.execute_script("var v = document.querySelector('[data-testid=reel-player]'); v.muted = true; v.play();")
    wait_until(browser, lambda d: d.execute_script(REEL_PLAYER)["time"] > 0.2, "the reel never played")
    # Seeking asks the server for a range of the file; the frame there arrives.
    browser.execute_script("var v = document.querySelector('[data-testid=reel-player]'); v.pause(); "
                           "v.currentTime = 1.5;")
    wait_until(browser, lambda d: d.execute_script(
        "var v = document.querySelector('[data-testid=reel-player]'); return !v.seeking && v.readyState >= 2"),
        "the reel player never showed the frame it was moved to")
    assert browser.execute_script(REEL_PLAYER)["time"] == pytest.approx(1.5, abs=0.05)
    # The analyzed video still plays from the chosen file, not from the server.
    wait_for_player(browser, 6.0)

    # The download link: the same file, saved under the video's name, with its length and size beside it.
    link = by_testid(browser, "reel-download")
    assert link.is_displayed() and link.text == "Download reel"
    assert link.get_attribute("href") == reel_url and link.get_attribute("download") == "match-reel.mp4"
    facts = by_id(browser, "reel-facts").text
    assert "2\u00a0s" in facts or "2 s" in facts, facts
    answer = requests.get(reel_url, timeout=10)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "video/mp4"
    assert len(answer.content) == data["reelSize"]
    assert not by_testid(browser, "reel-note").is_displayed()
    assert console_errors(browser) == []

    screenshot(browser, "web-results-reel.png")
    assert_fits_a_phone(browser, "the results with thumbnails and the reel")


def test_the_reel_and_the_thumbnails_work_from_the_keyboard(browser, marker_server, reel_clips):
    """Tab goes through the timeline's marks (each showing its thumbnail while focused) to the reel's player, whose
    own controls play it, and to its download link."""
    open_page(browser, marker_server)
    data = run_highlights(browser, marker_server, reel_clips["highlights"])
    assert data["reelUrl"]
    marks = all_by_testid(browser, "timeline-mark")
    assert len(marks) == len(data["highlights"]) == 2
    browser.execute_script("document.getElementById('new-analysis').focus()")  # the top of the results

    order = []
    for _ in range(60):
        focused = press_tab(browser)
        if focused == "reel-player" and order[-1] != "reel-player":
            # The first of its native controls Tab reaches is Play: Space plays the reel.
            browser.execute_script("document.querySelector('[data-testid=reel-player]').muted = true")
            press_key(browser, " ")
            wait_until(browser, lambda d: d.execute_script(REEL_PLAYER)["time"] > 0.1,
                       "Space on the reel player's first control did not play the reel")
        order.append(focused)
        if focused == "timeline-mark":
            mark = browser.switch_to.active_element
            thumbnail = mark.find_element("css selector", "[data-testid=thumbnail]")
            # Shown while the mark has the keyboard's focus, and only the focused mark's.
            wait_until(browser, lambda d: thumbnail.is_displayed(), "a focused mark did not show its thumbnail")
            # The one shown before fades out (0.12 s).
            wait_until(browser, lambda d: [m for m in marks if m.find_element(
                "css selector", "[data-testid=thumbnail]").is_displayed()] == [mark],
                "another mark than the focused one still showed its thumbnail")
            assert float(mark.get_attribute("data-start")) in {h["start_time"] for h in data["highlights"]}
        if focused == "reel-download":
            break
    assert order.count("timeline-mark") == 2, order
    assert "reel-player" in order and order.index("reel-player") < order.index("reel-download"), order
    # Leaving the marks hides their thumbnails again.
    assert not any(m.find_element("css selector", "[data-testid=thumbnail]").is_displayed() for m in marks)
    assert console_errors(browser) == []


def test_unchecking_the_reel_makes_none_but_thumbnails_still_come(browser, marker_server, reel_clips):
    open_page(browser, marker_server)
    browser.find_element("name", "reel").click()
    assert not browser.find_element("name", "reel").is_selected()
    data = run_highlights(browser, marker_server, reel_clips["highlights"])
    assert data["settings"]["reel"] is False  # the form sent reel=false
    assert (data["reelUrl"], data["reelDuration"], data["reelSize"]) == (None, None, None)
    assert not by_testid(browser, "reel-player").is_displayed()
    assert not by_testid(browser, "reel-download").is_displayed()
    assert not by_testid(browser, "reel-note").is_displayed()  # none asked for: nothing to explain
    assert browser.execute_script("return document.querySelector('[data-testid=reel-player]').getAttribute('src')") \
        is None  # nothing asked of the server
    loaded_thumbnails(browser, "[data-testid=highlight-item]", 2)
    assert console_errors(browser) == []


def test_a_refused_reel_says_why_where_the_reel_would_be(browser, make_app, marker_model_dir, reel_clips):
    """A reel longer than MAX_REEL_SECONDS is refused: the job completes, and the page shows the server's sentence."""
    app = make_app(MODEL=marker_model_dir, MAX_REEL_SECONDS=1)
    with serve(app) as base_url:
        open_page(browser, base_url)
        data = run_highlights(browser, base_url, reel_clips["highlights"])
        assert data["settings"]["reel"] is True and data["reelUrl"] is None
        sid = by_id(browser, "main").get_attribute("data-session-id")
        message = api(base_url, f"status/{sid}")[1]["message"]
        assert "No reel was made" in message
        note = by_testid(browser, "reel-note")
        assert note.is_displayed() and note.text == message
        assert not by_testid(browser, "reel-player").is_displayed()
        assert not by_testid(browser, "reel-download").is_displayed()
        assert not by_id(browser, "reel-what").is_displayed()  # no reel to describe
        loaded_thumbnails(browser, "[data-testid=highlight-item]", 2)  # thumbnails come all the same
        assert console_errors(browser) == []


def test_workout_steps_show_thumbnails_and_a_reel_cut_to_the_seconds_per_step(browser, marker_server, reel_clips):
    """Two 2 s steps, at most 1 s of each in the reel: a 2 s reel; each step's row and mark show its thumbnail."""
    open_page(browser, marker_server)
    choose(browser, reel_clips["workout"], "workout", segment_duration=2, reel_seconds_per_step=1)
    by_testid(browser, "start").click()
    sid = session_id(browser)
    wait_for_results(browser)
    _, results = api(marker_server, f"results/{sid}")
    data = results["data"]
    steps = data["exercise_steps"]
    assert [(s["exercise_name"], s["timestamp_formatted"]) for s in steps] == [
        ("squat", "00:00-00:02"), ("push-up", "00:02-00:04")]
    assert data["settings"]["reel_seconds_per_step"] == 1
    assert data["reelDuration"] == pytest.approx(2.0, abs=0.25)

    page = marker_server + "/"
    rows = loaded_thumbnails(browser, "[data-testid=step-item]", 2)
    marks = loaded_thumbnails(browser, "[data-testid=timeline-mark]", 2)
    for index, (row, mark, step) in enumerate(zip(rows, marks, steps)):
        assert row["src"] == mark["src"] == urljoin(page, step["thumbnailUrl"])
        assert row["alt"] == f"Frame from step {index + 1}, {step['exercise_name']}, {step['timestamp_formatted']}"
    assert by_id(browser, "reel-title").text == "Reel of the exercise steps"
    assert by_id(browser, "reel-what").text == "The exercise steps one after another, at most 1 s of each."
    wait_until(browser, lambda d: d.execute_script(REEL_PLAYER)["readyState"] >= 1, "the workout reel never loaded")
    assert browser.execute_script(REEL_PLAYER)["duration"] == pytest.approx(data["reelDuration"], abs=0.15)
    # The steps table reads as before: the picture adds no words to its cells.
    assert browser.execute_script(CELL_TEXT, "[data-testid=step-item]") == [
        [s["exercise_name"], s["timestamp_formatted"], f"{s['duration']:g}\u00a0s"] for s in steps]
    assert console_errors(browser) == []


def test_the_progress_says_the_reel_is_being_rendered(browser, live_server):
    """The status's `rendering` step, given to the page's own progress module: the bar's words say so, in place of
    the segments (all done by then)."""
    open_page(browser, live_server)
    text = browser.execute_async_script("""
        var done = arguments[arguments.length - 1];
        import(arguments[0]).then(function (progress) {
          progress.setAnalysis({progress: 96.5, currentStep: 'rendering', segmentsDone: 6, segmentsTotal: 6,
                                message: 'Rendering the reel (40 %)'});
          done(document.getElementById('progress-text').textContent);
        }, function (error) { done(String(error)); });
    """, live_server + "/static/js/progress.js")
    assert text == "96% · rendering the reel"
