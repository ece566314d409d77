/* Following a job once it is queued: polling its status, cancelling it, fetching its results,
 * and its results so far each time more segments have finished. */
import { NETWORK_SENTENCE, cancelJob, jobResults, jobStatus, problemSentence } from "./api.js";
import { plural } from "./dom.js";
import { seconds } from "./format.js";
import { currentState, enableCancel, fail, setState, showError } from "./page.js";
import { analysisType } from "./parameters.js";
import { analysisPercent, setAnalysis, setAnalysisNote, setStatus } from "./progress.js";
import { endPartialResults, showPartialResults, showResults } from "./results.js";
import { abandonRun, currentSession, isCurrent, runFile } from "./run.js";

// The server asks for a poll a second (Retry-After); kept within these bounds whatever it says.
const POLL_MIN_MS = 500;
const POLL_MAX_MS = 3000;
const MAX_POLL_FAILURES = 5;  // network failures in a row before the page gives up
const RETRY_AFTER_FAILURE_MS = 2000;

let pollTimer = null;
let pollFailures = 0;
// The run's partial results: segmentsDone when they were last asked for, and whether that request is out.
let partial = { done: 0, busy: false };

function retryAfterMs(value) {
  const s = parseFloat(value);
  const ms = isFinite(s) ? s * 1000 : 1000;
  return Math.min(POLL_MAX_MS, Math.max(POLL_MIN_MS, ms));
}

export function stopPolling() {
  if (pollTimer) clearTimeout(pollTimer);
  pollTimer = null;
}

export function followJob(run) {
  pollFailures = 0;
  partial = { done: 0, busy: false };
  poll(run);
}

async function poll(run) {
  pollTimer = null;
  const sessionId = currentSession();
  if (!isCurrent(run) || !sessionId) return;
  let answer;
  try {
    answer = await jobStatus(sessionId);
  } catch (e) {
    if (!isCurrent(run)) return;
    pollFailures += 1;
    if (pollFailures >= MAX_POLL_FAILURES) {
      fail("Lost contact with the server while waiting for the analysis. Reload the page to start again "
        + "once the server is back.", "Lost contact with the server.");
      endPartialResults("The page lost contact with the server.");
      return;
    }
    setStatus("Lost contact with the server; trying again…");
    pollTimer = setTimeout(() => poll(run), RETRY_AFTER_FAILURE_MS);
    return;
  }
  if (!isCurrent(run)) return;
  pollFailures = 0;
  const status = answer.body;
  if (!answer.ok || !status) {
    fail(problemSentence(answer.status, status), "Lost track of the analysis.");
    endPartialResults("The page lost track of the analysis.");
    return;
  }
  setAnalysis(status);
  if (status.message) setStatus(status.message);
  if (status.status === "completed") {
    loadResults(run, status.message);
  } else if (status.status === "failed") {
    fail(status.error || "The analysis failed.", "The analysis failed.");
    endPartialResults("The analysis failed, so no more will come.");
  } else if (status.status === "cancelled") {
    showCancelled();
  } else {
    if (Number(status.segmentsDone) > partial.done && !partial.busy) loadPartialResults(run, partial, status);
    pollTimer = setTimeout(() => poll(run), retryAfterMs(answer.retryAfter));
  }
}

/* The results so far, asked for only when more segments have finished than at the last asking. */
async function loadPartialResults(run, asked, status) {
  asked.done = Number(status.segmentsDone);
  asked.busy = true;
  let answer;
  try {
    answer = await jobResults(currentSession(), true);
  } catch (e) {
    return;  // the status poll notices a server that is gone
  } finally {
    asked.busy = false;
  }
  // Only while the job runs: the final results, once drawn, are not drawn over.
  if (!isCurrent(run) || currentState() !== "processing") return;
  const body = answer.body;
  const data = body && (body.data || body.results);
  // Anything else (the job ended meanwhile, a server without partial results) waits for the status poll.
  if (!answer.ok || !data || body.partial !== true) return;
  showPartialResults(body.analysisType || analysisType(), data, runFile(), status.segmentsTotal);
}

function showCancelled() {
  stopPolling();
  abandonRun();  // ignore answers still on their way
  setState("cancelled");
  const at = Math.floor(analysisPercent());
  setAnalysisNote("cancelled at " + at + "%");
  setStatus("Analysis cancelled at " + at + "%; nothing more will be analyzed.");
  endPartialResults("The analysis was cancelled, so no more will come.");
}

/* Cancel pressed while the job is queued or running. */
export async function cancelAnalysis() {
  const sessionId = currentSession();
  if (currentState() !== "processing" || !sessionId) return;
  enableCancel(false);
  setStatus("Cancelling…");
  try {
    const answer = await cancelJob(sessionId);
    if (answer.ok && answer.body && answer.body.status === "cancelled") {
      showCancelled();
    } else {
      // 409: it finished (or failed) first; the next status poll shows which.
      enableCancel(true);
      showError(problemSentence(answer.status, answer.body));
    }
  } catch (e) {
    enableCancel(true);
    showError("The server could not be reached to cancel the analysis. Try again.");
  }
}

/* `message`: the job's last status line (it says why, when a reel was asked for and not made). */
async function loadResults(run, message) {
  setStatus("Fetching the results…");
  let answer;
  try {
    answer = await jobResults(currentSession());
  } catch (e) {
    if (!isCurrent(run)) return;
    fail(NETWORK_SENTENCE, "The results could not be fetched.");
    endPartialResults("The final results could not be fetched.");
    return;
  }
  if (!isCurrent(run)) return;
  const body = answer.body;
  const data = body && (body.data || body.results);
  if (!answer.ok || !data) {
    fail(problemSentence(answer.status, body), "The results could not be fetched.");
    endPartialResults("The final results could not be fetched.");
    return;
  }
  setState("completed");
  setAnalysisNote("100% · done");
  setStatus("Done: " + plural(data.total_segments_analyzed || 0, "segment") + " analyzed in "
    + seconds(data.processing_time_seconds) + ".");
  showResults(body.analysisType || analysisType(), data, runFile(), message);
}
