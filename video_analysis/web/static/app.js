/* The web page at /: upload a video, follow the job, cancel it, show its results on a timeline.
 *
 * Plain JavaScript, no build step, no dependencies. It talks only to the public
 * async API (/api/v1/video/...) with relative URLs, so it also works when the
 * service sits behind a path prefix. Everything the server sends is shown with
 * textContent, never as HTML.
 */
"use strict";

(function () {
  var API = "api/v1/video/";
  var DEFAULT_SEGMENT = { highlights: "10", workout: "15" };
  var TYPE_HINTS = {
    highlights: "Scores every segment 1–10 and keeps the best ones.",
    workout: "Names the exercise in every segment and merges repeats into steps.",
  };
  var POLL_MIN_MS = 500;
  var POLL_MAX_MS = 3000;
  var MAX_POLL_FAILURES = 5;
  var STEP_COLOURS = 6;

  var $ = function (id) { return document.getElementById(id); };
  var el = {
    main: $("main"),
    form: $("analysis-form"),
    fields: $("form-fields"),
    dropZone: $("drop-zone"),
    fileInput: $("file-input"),
    fileName: $("file-name"),
    dropTitle: $("drop-title"),
    type: $("analysis-type"),
    typeHint: $("type-hint"),
    segment: $("segment_duration"),
    start: $("start"),
    resetSettings: $("reset-settings"),
    error: $("error"),
    progressPanel: $("progress-panel"),
    uploadBar: $("upload-progress"),
    uploadText: $("upload-text"),
    progressBar: $("progress"),
    progressText: $("progress-text"),
    statusMessage: $("status-message"),
    cancel: $("cancel"),
    results: $("results"),
    newAnalysis: $("new-analysis"),
    summary: $("summary"),
    player: $("player"),
    playerNote: $("player-note"),
    timeline: $("timeline"),
    playhead: $("playhead"),
    scaleMid: $("scale-mid"),
    scaleEnd: $("scale-end"),
    listTitle: $("list-title"),
    emptyNote: $("empty-note"),
    highlightList: $("highlight-list"),
    stepsWrap: $("steps-wrap"),
    stepsBody: $("steps-body"),
    segments: $("segments"),
    segmentsSummary: $("segments-summary"),
    segmentCol: $("segment-col"),
    segmentsBody: $("segments-body"),
  };

  // What the page is doing: idle | uploading | processing | completed | cancelled | failed.
  var state = "idle";
  var chosenFile = null;   // the file in the picker / drop zone
  var runFile = null;      // the file of the current (or last) run, played in the results
  var videoUrl = null;     // object URL of runFile
  var sessionId = null;    // the server's id for the current (or last) run
  var run = 0;             // bumped to make callbacks of an abandoned run do nothing
  var xhr = null;          // the upload in flight
  var pollTimer = null;
  var pollFailures = 0;
  var segmentEdited = false;
  var duration = 0;        // of the analyzed video, in seconds
  var timedItems = [];     // [{start, end, nodes: [elements to mark as current]}]

  // -- small helpers -------------------------------------------------------------------
  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function clock(seconds) {
    var total = Math.max(0, Math.floor(Number(seconds) || 0));
    var h = Math.floor(total / 3600), m = Math.floor((total % 3600) / 60), s = total % 60;
    return h > 0 ? h + ":" + pad(m) + ":" + pad(s) : pad(m) + ":" + pad(s);
  }

  function range(start, end) { return clock(start) + "-" + clock(end); }  // as the API writes timestamp_formatted

  function seconds(value) {
    var n = Number(value) || 0;
    return (Math.round(n * 10) / 10).toString().replace(/\.0$/, "") + "\u00a0s";
  }

  function bytes(n) {
    if (n < 1024) return n + " B";
    if (n < 1024 * 1024) return (n / 1024).toFixed(0) + " KB";
    if (n < 1024 * 1024 * 1024) return (n / 1024 / 1024).toFixed(1) + " MB";
    return (n / 1024 / 1024 / 1024).toFixed(2) + " GB";
  }

  function make(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function parseJson(text) {
    try { return JSON.parse(text); } catch (e) { return null; }
  }

  function retryAfterMs(value) {
    var s = parseFloat(value);
    var ms = isFinite(s) ? s * 1000 : 1000;
    return Math.min(POLL_MAX_MS, Math.max(POLL_MIN_MS, ms));
  }

  /* The sentence to show for an error answer: the problem's `error`, never raw JSON. */
  function problemSentence(status, body) {
    if (body && typeof body === "object") {
      if (typeof body.error === "string" && body.error.trim()) return body.error.trim();
      if (typeof body.detail === "string" && body.detail.trim()) return body.detail.trim();
    }
    if (status === 413) return "The video is larger than this server accepts; upload a shorter or more compressed video.";
    if (status === 502 || status === 503 || status === 504) {
      return "The server is not available right now (HTTP " + status + "). Try again in a minute.";
    }
    if (status === 0) return "The server could not be reached. Check that it is running and try again.";
    return "The server answered with an unexpected error (HTTP " + status + "). Try again.";
  }

  var NETWORK_SENTENCE = "The server could not be reached. Check your connection (and that the service is running), then try again.";

  // -- error area ----------------------------------------------------------------------
  function showError(sentence) {
    el.error.textContent = sentence;
    el.error.hidden = false;
  }

  function clearError() {
    el.error.textContent = "";
    el.error.hidden = true;
  }

  // -- page state ----------------------------------------------------------------------
  function setState(next) {
    state = next;
    el.main.setAttribute("data-state", next);
    var busy = next === "uploading" || next === "processing";
    el.fields.disabled = busy;
    el.start.disabled = busy;
    el.resetSettings.disabled = busy;
    el.cancel.hidden = !busy;
    el.cancel.disabled = false;
    el.start.textContent = busy ? "Working…" : "Analyze video";
  }

  function setStatus(text) { el.statusMessage.textContent = text; }

  function setUpload(fraction, loaded, total) {
    var pct = Math.round(Math.max(0, Math.min(1, fraction)) * 100);
    el.uploadBar.value = pct;
    el.uploadBar.textContent = pct + "%";
    el.uploadText.textContent = total ? pct + "% · " + bytes(loaded) + " of " + bytes(total) : pct + "%";
  }

  function setProgress(status) {
    var pct = Math.max(Number(el.progressBar.value) || 0, Math.min(100, Number(status.progress) || 0));
    el.progressBar.value = pct;
    el.progressBar.textContent = Math.round(pct) + "%";
    var text = Math.floor(pct) + "%";
    if (status.segmentsTotal) text += " · " + status.segmentsDone + " of " + status.segmentsTotal + " segments";
    el.progressText.textContent = text;
  }

  function resetProgress() {
    setUpload(0);
    el.progressBar.value = 0;
    el.progressBar.textContent = "0%";
    el.progressText.textContent = "waiting";
    setStatus("");
  }

  // -- choosing a file -----------------------------------------------------------------
  function chooseFile(file) {
    if (!file) return;
    chosenFile = file;
    el.fileName.textContent = file.name + " · " + bytes(file.size);
    el.dropTitle.textContent = "Drop another video to replace it";
    el.dropZone.classList.add("has-file");
    clearError();
  }

  el.fileInput.addEventListener("change", function () {
    if (el.fileInput.files && el.fileInput.files.length) chooseFile(el.fileInput.files[0]);
  });

  function hasFiles(event) {
    var types = event.dataTransfer && event.dataTransfer.types;
    return !!types && Array.prototype.indexOf.call(types, "Files") !== -1;
  }

  var dragDepth = 0;
  el.dropZone.addEventListener("dragenter", function (event) {
    if (!hasFiles(event) || el.fields.disabled) return;
    event.preventDefault();
    dragDepth += 1;
    el.dropZone.classList.add("is-over");
  });
  el.dropZone.addEventListener("dragover", function (event) {
    if (!hasFiles(event) || el.fields.disabled) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  el.dropZone.addEventListener("dragleave", function () {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) el.dropZone.classList.remove("is-over");
  });
  el.dropZone.addEventListener("drop", function (event) {
    event.preventDefault();
    dragDepth = 0;
    el.dropZone.classList.remove("is-over");
    if (el.fields.disabled) return;
    var files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    try { el.fileInput.files = files; } catch (e) { /* older browsers: keep our own reference */ }
    chooseFile(files[0]);
    if (files.length > 1) showError("Drop one video at a time; the first one was chosen.");
  });
  // A file dropped next to the zone must not make the browser navigate away from the page.
  window.addEventListener("dragover", function (event) { if (hasFiles(event)) event.preventDefault(); });
  window.addEventListener("drop", function (event) { if (hasFiles(event)) event.preventDefault(); });

  // -- analysis type and parameters ----------------------------------------------------
  function applyType() {
    var type = el.type.value;
    el.typeHint.textContent = TYPE_HINTS[type] || "";
    var fields = el.form.querySelectorAll("[data-types]");
    for (var i = 0; i < fields.length; i++) {
      var applies = fields[i].getAttribute("data-types").split(" ").indexOf(type) !== -1;
      fields[i].hidden = !applies;
      var inputs = fields[i].querySelectorAll("input, select, textarea");
      for (var j = 0; j < inputs.length; j++) inputs[j].disabled = !applies;
    }
    if (!segmentEdited) el.segment.value = DEFAULT_SEGMENT[type] || "10";
  }

  el.type.addEventListener("change", applyType);
  el.segment.addEventListener("input", function () { segmentEdited = true; });

  el.resetSettings.addEventListener("click", function () {
    var inputs = el.form.querySelectorAll(".params input, .advanced input, .advanced textarea");
    for (var i = 0; i < inputs.length; i++) inputs[i].value = inputs[i].defaultValue;
    segmentEdited = false;
    applyType();
  });

  function formData() {
    var data = new FormData();
    data.append("analysis_type", el.type.value);
    var inputs = el.form.querySelectorAll(".params input, .advanced input, .advanced textarea");
    for (var i = 0; i < inputs.length; i++) {
      var input = inputs[i];
      if (input.disabled || !input.name) continue;
      var value = input.tagName === "TEXTAREA" ? input.value : input.value.trim();
      if (value.trim() === "") continue;  // empty means "the server's default"
      data.append(input.name, value);
    }
    data.append("video", runFile, runFile.name);
    return data;
  }

  // -- running an analysis -------------------------------------------------------------
  function forgetSession() {
    // Delete the previous run's files on the server; nobody will look at them again.
    if (!sessionId) return;
    var id = sessionId;
    sessionId = null;
    el.main.removeAttribute("data-session-id");
    fetch(API + "cleanup/" + encodeURIComponent(id), { method: "DELETE", headers: { Accept: "application/json" } })
      .catch(function () { /* it expires on its own */ });
  }

  function stopPolling() {
    if (pollTimer) clearTimeout(pollTimer);
    pollTimer = null;
  }

  el.form.addEventListener("submit", function (event) {
    event.preventDefault();
    startAnalysis();
  });

  function startAnalysis() {
    clearError();
    if (!chosenFile) {
      showError("Choose a video first: drop it on the box above, or use “choose a file”.");
      el.fileInput.focus();
      return;
    }
    if (!el.form.reportValidity()) return;

    stopPolling();
    forgetSession();
    hideResults();
    run += 1;
    var thisRun = run;
    runFile = chosenFile;
    var data = formData();

    resetProgress();
    el.progressPanel.hidden = false;
    setState("uploading");
    setStatus("Uploading " + runFile.name + "…");

    var request = new XMLHttpRequest();
    xhr = request;
    request.open("POST", API + "upload");
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", function (event) {
      if (thisRun !== run || !event.lengthComputable) return;
      setUpload(event.loaded / event.total, event.loaded, event.total);
    });
    request.upload.addEventListener("load", function () {
      if (thisRun !== run) return;
      setUpload(1, runFile.size, runFile.size);
      setStatus("Upload complete; the server is checking the video…");
    });
    request.addEventListener("load", function () {
      if (thisRun !== run) return;
      xhr = null;
      var body = parseJson(request.responseText);
      if (request.status === 202 && body && body.sessionId) {
        sessionId = body.sessionId;
        el.main.setAttribute("data-session-id", sessionId);
        setUpload(1, runFile.size, runFile.size);
        setState("processing");
        setStatus(body.message || "Queued.");
        pollFailures = 0;
        poll(thisRun);
      } else {
        fail(problemSentence(request.status, body), "The upload was refused.");
        el.progressPanel.hidden = true;  // no job was made; the error says why
      }
    });
    request.addEventListener("error", function () {
      if (thisRun !== run) return;
      xhr = null;
      fail("The upload did not reach the server: the connection was lost or refused. The file may be larger than "
        + "the server accepts, or the service may be down. Try again.", "Upload failed.");
      el.progressPanel.hidden = true;
    });
    request.send(data);
  }

  function fail(sentence, statusLine) {
    stopPolling();
    setState("failed");
    setStatus(statusLine || "The analysis did not finish.");
    showError(sentence);
  }

  function poll(thisRun) {
    pollTimer = null;
    if (thisRun !== run || !sessionId) return;
    var response;
    fetch(API + "status/" + encodeURIComponent(sessionId), { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (res) {
        response = res;
        return res.text();
      })
      .then(function (text) {
        if (thisRun !== run) return;
        pollFailures = 0;
        var body = parseJson(text);
        if (!response.ok || !body) {
          fail(problemSentence(response.status, body), "Lost track of the analysis.");
          return;
        }
        setProgress(body);
        if (body.message) setStatus(body.message);
        if (body.status === "completed") {
          loadResults(thisRun);
        } else if (body.status === "failed") {
          fail(body.error || "The analysis failed.", "The analysis failed.");
        } else if (body.status === "cancelled") {
          showCancelled();
        } else {
          pollTimer = setTimeout(function () { poll(thisRun); }, retryAfterMs(response.headers.get("Retry-After")));
        }
      })
      .catch(function () {
        if (thisRun !== run) return;
        pollFailures += 1;
        if (pollFailures >= MAX_POLL_FAILURES) {
          fail("Lost contact with the server while waiting for the analysis. Reload the page to start again "
            + "once the server is back.", "Lost contact with the server.");
          return;
        }
        setStatus("Lost contact with the server; trying again…");
        pollTimer = setTimeout(function () { poll(thisRun); }, 2000);
      });
  }

  function showCancelled() {
    stopPolling();
    run += 1;  // ignore answers still on their way
    setState("cancelled");
    var at = Math.floor(Number(el.progressBar.value) || 0);
    el.progressText.textContent = "cancelled at " + at + "%";
    setStatus("Analysis cancelled at " + at + "%; nothing more will be analyzed.");
  }

  el.cancel.addEventListener("click", function () {
    if (state === "uploading" && xhr) {
      run += 1;
      xhr.abort();
      xhr = null;
      setState("cancelled");
      el.uploadText.textContent = "cancelled";
      setStatus("Upload cancelled; nothing was analyzed.");
      return;
    }
    if (state !== "processing" || !sessionId) return;
    el.cancel.disabled = true;
    setStatus("Cancelling…");
    var response;
    fetch(API + "cancel/" + encodeURIComponent(sessionId), { method: "POST", headers: { Accept: "application/json" } })
      .then(function (res) { response = res; return res.text(); })
      .then(function (text) {
        var body = parseJson(text);
        if (response.ok && body && body.status === "cancelled") {
          showCancelled();
        } else {
          // 409: it finished (or failed) first; the next status poll shows which.
          el.cancel.disabled = false;
          showError(problemSentence(response.status, body));
        }
      })
      .catch(function () {
        el.cancel.disabled = false;
        showError("The server could not be reached to cancel the analysis. Try again.");
      });
  });

  function loadResults(thisRun) {
    var response;
    setStatus("Fetching the results…");
    fetch(API + "results/" + encodeURIComponent(sessionId), { headers: { Accept: "application/json" }, cache: "no-store" })
      .then(function (res) { response = res; return res.text(); })
      .then(function (text) {
        if (thisRun !== run) return;
        var body = parseJson(text);
        if (!response.ok || !body || !(body.data || body.results)) {
          fail(problemSentence(response.status, body), "The results could not be fetched.");
          return;
        }
        var data = body.data || body.results;
        setState("completed");
        el.progressText.textContent = "100% · done";
        setStatus("Done: " + (data.total_segments_analyzed || 0) + " segment"
          + (data.total_segments_analyzed === 1 ? "" : "s") + " analyzed in "
          + seconds(data.processing_time_seconds) + ".");
        renderResults(body.analysisType || el.type.value, data);
      })
      .catch(function () {
        if (thisRun !== run) return;
        fail(NETWORK_SENTENCE, "The results could not be fetched.");
      });
  }

  // -- results -------------------------------------------------------------------------
  function hideResults() {
    el.results.hidden = true;
    el.player.pause();
    el.player.removeAttribute("src");
    el.player.load();
    if (videoUrl) URL.revokeObjectURL(videoUrl);
    videoUrl = null;
    el.playerNote.hidden = true;
    timedItems = [];
  }

  function seek(start) {
    var t = Math.max(0, Number(start) || 0);
    try { el.player.currentTime = t; } catch (e) { /* no media yet */ }
    markCurrent(t);
  }

  function seekOnActivate(node, start) {
    node.addEventListener("click", function () { seek(start); });
  }

  function markCurrent(t) {
    if (duration > 0) el.playhead.style.left = Math.min(100, (t / duration) * 100) + "%";
    for (var i = 0; i < timedItems.length; i++) {
      var item = timedItems[i];
      var on = t >= item.start && (t < item.end || (item.end >= duration && t >= item.end));
      for (var j = 0; j < item.nodes.length; j++) item.nodes[j].classList.toggle("is-current", on);
    }
  }

  el.player.addEventListener("timeupdate", function () { markCurrent(el.player.currentTime); });
  el.player.addEventListener("seeked", function () { markCurrent(el.player.currentTime); });
  el.player.addEventListener("error", function () {
    if (!el.player.getAttribute("src")) return;
    el.playerNote.textContent = "This browser cannot play this video's format, so there is no preview here. "
      + "The times below are still right.";
    el.playerNote.hidden = false;
  });

  // Clicking the bare timeline (not a mark) seeks to that moment.
  el.timeline.addEventListener("click", function (event) {
    if (event.target !== el.timeline || duration <= 0) return;
    var box = el.timeline.getBoundingClientRect();
    seek(((event.clientX - box.left) / box.width) * duration);
  });

  function clearChildren(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function addMark(start, end, label, className, style) {
    var mark = make("button", "timeline-mark " + (className || ""));
    mark.type = "button";
    mark.setAttribute("data-testid", "timeline-mark");
    mark.setAttribute("data-start", String(start));
    mark.setAttribute("aria-label", label);
    mark.title = label;
    var left = duration > 0 ? (start / duration) * 100 : 0;
    var width = duration > 0 ? ((end - start) / duration) * 100 : 0;
    mark.style.left = Math.max(0, Math.min(100, left)) + "%";
    // 2px less than its share, so that marks of adjacent segments stay apart.
    mark.style.width = "calc(" + Math.max(0.8, Math.min(100 - left, width)) + "% - 2px)";
    if (style) for (var key in style) mark.style.setProperty(key, style[key]);
    seekOnActivate(mark, start);
    el.timeline.appendChild(mark);
    return mark;
  }

  function renderResults(type, data) {
    var video = data.video || {};
    duration = Number(video.duration_seconds) || 0;
    var workout = type === "workout";

    // Summary line.
    var bits = [];
    if (video.filename) bits.push(video.filename);
    if (duration) bits.push(clock(duration));
    if (video.width && video.height) bits.push(video.width + "×" + video.height);
    if (data.settings && data.settings.segment_duration) bits.push(seconds(data.settings.segment_duration) + " segments");
    if (data.settings && data.settings.model) bits.push("model " + data.settings.model);
    el.summary.textContent = bits.join(" · ");

    // Player: the local file, no download.
    if (videoUrl) URL.revokeObjectURL(videoUrl);
    videoUrl = URL.createObjectURL(runFile);
    el.playerNote.hidden = true;
    el.player.src = videoUrl;

    // Timeline scale.
    clearChildren(el.timeline);
    el.timeline.appendChild(el.playhead);
    el.playhead.style.left = "0%";
    el.scaleMid.textContent = duration ? clock(duration / 2) : "";
    el.scaleEnd.textContent = duration ? clock(duration) : "";
    el.timeline.setAttribute("aria-label", workout ? "Timeline of exercise steps" : "Timeline of highlights");

    clearChildren(el.highlightList);
    clearChildren(el.stepsBody);
    timedItems = [];
    el.emptyNote.hidden = true;

    if (workout) renderWorkout(data); else renderHighlights(data);
    renderSegments(workout, data);

    el.results.hidden = false;
    markCurrent(0);
    el.results.scrollIntoView({ behavior: "smooth", block: "start" });
  }

  function renderHighlights(data) {
    var highlights = data.highlights || [];
    el.listTitle.textContent = highlights.length
      ? highlights.length + " highlight" + (highlights.length === 1 ? "" : "s") + ", best first"
      : "Highlights";
    el.highlightList.hidden = !highlights.length;
    el.stepsWrap.hidden = true;

    highlights.forEach(function (h, index) {
      var label = "Highlight " + (index + 1) + ": " + (h.timestamp_formatted || range(h.start_time, h.end_time))
        + ", score " + h.significance_score + " of 10";
      var score = Number(h.significance_score) || 0;
      var mark = addMark(h.start_time, h.end_time, label, "score-mark", { "--strength": String(0.35 + score / 15.4) });

      var li = make("li");
      var button = make("button", "highlight-item");
      button.type = "button";
      button.setAttribute("data-testid", "highlight-item");
      button.setAttribute("data-start", String(h.start_time));
      button.setAttribute("aria-label", label + ". Play from here.");
      var head = make("span", "item-head");
      head.appendChild(make("span", "rank", index + 1));
      head.appendChild(make("span", "time", h.timestamp_formatted || range(h.start_time, h.end_time)));
      var badge = make("span", "score score-" + Math.max(1, Math.min(10, score)), score + "/10");
      head.appendChild(badge);
      button.appendChild(head);
      button.appendChild(make("span", "description", h.description || "No description."));
      seekOnActivate(button, h.start_time);
      li.appendChild(button);
      el.highlightList.appendChild(li);
      timedItems.push({ start: h.start_time, end: h.end_time, nodes: [button, mark] });
    });

    if (!highlights.length) {
      var analyses = data.all_analyses || [];
      var unscored = analyses.filter(function (a) { return a.significance_score === null || a.significance_score === undefined; }).length;
      var minimum = data.settings && data.settings.min_significance;
      var text = "No highlights found: no segment scored " + (minimum ? "at least " + minimum + "/10" : "high enough") + ".";
      if (unscored) {
        text += " The model gave no readable score for " + unscored + " of " + analyses.length + " segment"
          + (analyses.length === 1 ? "" : "s") + ".";
      }
      text += " Every segment's answer is listed below; a lower minimum score may find more.";
      el.emptyNote.textContent = text;
      el.emptyNote.hidden = false;
      var none = make("span", "timeline-empty", "No highlights to mark");
      none.setAttribute("aria-hidden", "true");
      el.timeline.appendChild(none);
    }
  }

  function renderWorkout(data) {
    var steps = data.exercise_steps || [];
    el.listTitle.textContent = steps.length
      ? steps.length + " exercise step" + (steps.length === 1 ? "" : "s")
      : "Exercise steps";
    el.highlightList.hidden = true;
    el.stepsWrap.hidden = !steps.length;

    var colours = {};
    var next = 0;
    steps.forEach(function (step, index) {
      var name = step.exercise_name || "exercise";
      if (!(name in colours)) { colours[name] = next % STEP_COLOURS; next += 1; }
      var colour = "step-colour-" + colours[name];
      var time = step.timestamp_formatted || range(step.start_timestamp, step.end_timestamp);
      var label = "Step " + (index + 1) + ": " + name + ", " + time;
      var mark = addMark(step.start_timestamp, step.end_timestamp, label, "step-mark " + colour);

      var row = make("tr", "step-item");
      row.setAttribute("data-testid", "step-item");
      row.setAttribute("data-start", String(step.start_timestamp));
      var nameCell = make("td", "exercise");
      var button = make("button", "row-button");
      button.type = "button";
      button.setAttribute("aria-label", label + ". Play from here.");
      button.appendChild(make("span", "swatch " + colour));
      button.appendChild(make("span", "exercise-name", name));
      nameCell.appendChild(button);
      if (step.description && step.description !== name + " from " + step.timestamp_formatted) {
        var description = make("span", "step-description", step.description);
        nameCell.appendChild(description);
      }
      row.appendChild(nameCell);
      row.appendChild(make("td", "time", time));
      row.appendChild(make("td", "num", seconds(step.duration)));
      // The whole row seeks on click; its button makes it keyboard operable.
      seekOnActivate(row, step.start_timestamp);
      el.stepsBody.appendChild(row);
      timedItems.push({ start: step.start_timestamp, end: step.end_timestamp, nodes: [row, mark] });
    });

    if (!steps.length) {
      el.emptyNote.textContent = "No exercise found: every segment looked like rest, or the model named no exercise. "
        + "Every segment's answer is listed below.";
      el.emptyNote.hidden = false;
      var none = make("span", "timeline-empty", "No exercise steps to mark");
      none.setAttribute("aria-hidden", "true");
      el.timeline.appendChild(none);
    }
  }

  function renderSegments(workout, data) {
    var rows = (workout ? data.segment_analyses : data.all_analyses) || [];
    clearChildren(el.segmentsBody);
    el.segments.open = false;
    el.segmentsSummary.textContent = "Every analyzed segment (" + rows.length + ")";
    el.segmentCol.textContent = workout ? "Exercise" : "Score";
    rows.forEach(function (segment) {
      var tr = make("tr");
      tr.appendChild(make("td", "num", segment.segment));
      var timeCell = make("td", "time");
      var button = make("button", "link-button", range(segment.start_time, segment.end_time));
      button.type = "button";
      button.setAttribute("aria-label", "Play segment " + segment.segment + " from " + clock(segment.start_time));
      seekOnActivate(button, segment.start_time);
      timeCell.appendChild(button);
      tr.appendChild(timeCell);
      var value = workout ? segment.exercise
        : (segment.significance_score === null || segment.significance_score === undefined
          ? "no score" : segment.significance_score + "/10");
      tr.appendChild(make("td", workout ? "exercise" : "num", value));
      tr.appendChild(make("td", "answer", segment.analysis || ""));
      el.segmentsBody.appendChild(tr);
    });
  }

  el.newAnalysis.addEventListener("click", function () {
    stopPolling();
    run += 1;
    forgetSession();
    hideResults();
    el.progressPanel.hidden = true;
    clearError();
    chosenFile = null;
    el.fileInput.value = "";
    el.fileName.textContent = "No video chosen yet.";
    el.dropTitle.textContent = "Drop a video here";
    el.dropZone.classList.remove("has-file");
    setState("idle");
    window.scrollTo({ top: 0, behavior: "smooth" });
    el.fileInput.focus();
  });

  applyType();
  setState("idle");
})();
