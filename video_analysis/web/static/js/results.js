/* The results section: the summary line, the player and timeline, the findings, the reel, every segment.
 *
 * While the job runs, the results so far (partial) are drawn here as they grow, marked as partial;
 * the final results are drawn over them in place.
 */
import { byId } from "./dom.js";
import { clearFindings, showHighlights, showSteps } from "./findings.js";
import { clock, seconds } from "./format.js";
import { hideReel, showReel } from "./reel.js";
import { clearSegments, showSegments } from "./segments.js";
import { clearTimeline, playLocalFile, setTimeline, unloadPlayer } from "./timeline.js";

const results = byId("results");
const summary = byId("summary");
const partialNote = byId("partial-note");

let shown = false;  // the current run's results (partial or final) are on the page
let partialCounts = null;  // {done, total} while the results shown are partial

export function hideResults() {
  results.hidden = true;
  shown = false;
  partialCounts = null;
  unloadPlayer();
  hideReel();
}

function summaryLine(data, duration) {
  const video = data.video || {};
  const settings = data.settings || {};
  const bits = [];
  if (video.filename) bits.push(video.filename);
  if (duration) bits.push(clock(duration));
  if (video.width && video.height) bits.push(video.width + "×" + video.height);
  if (settings.segment_duration) bits.push(seconds(settings.segment_duration) + " segments");
  if (settings.model) bits.push("model " + settings.model);
  return bits.join(" · ");
}

/* Draws `data` (a results answer's `data`); the first time for a run, it also loads `file` into the player.
 * `partial` is null for the final results. */
function draw(type, data, file, partial) {
  const first = !shown;
  const duration = Number((data.video || {}).duration_seconds) || 0;
  const workout = type === "workout";
  if (first) {
    playLocalFile(file);
    clearTimeline();
    clearFindings();
    clearSegments();
  }
  summary.textContent = summaryLine(data, duration);
  setTimeline(duration, workout ? "Timeline of exercise steps" : "Timeline of highlights");
  if (workout) showSteps(data, !!partial); else showHighlights(data, !!partial);
  showSegments(workout, data, partial ? partial.total : 0);
  results.hidden = false;
  shown = true;
  return first;
}

function sayPartial(ending) {
  const { done, total } = partialCounts;
  const of = (total ? done + " of " + total : String(done)) + " segments";
  partialNote.textContent = ending
    ? "Partial results: " + of + ". " + ending
    : "Partial results: " + of + " so far; more appear as the analysis goes on.";
}

/* The final results; `file` is the run's own video, played here; `message` is the job's last status line. */
export function showResults(type, data, file, message) {
  partialCounts = null;
  const first = draw(type, data, file, null);
  showReel(type, data, message);
  results.setAttribute("data-partial", "false");
  partialNote.hidden = true;
  // Results that were already growing on screen stay where the reader is.
  if (first) results.scrollIntoView({ behavior: "smooth", block: "start" });
}

/* The results so far of a job still running: `total` is its number of segments (from its status). */
export function showPartialResults(type, data, file, total) {
  const segments = (type === "workout" ? data.segment_analyses : data.all_analyses) || [];
  const done = Number(data.total_segments_analyzed) || segments.length;
  partialCounts = { done, total: Math.max(done, Number(total) || 0) };
  draw(type, data, file, partialCounts);
  results.setAttribute("data-partial", "true");
  sayPartial(null);
  partialNote.hidden = false;
}

/* The run ended without final results (`ending`: a sentence saying how): partial results on the page say so and stay. */
export function endPartialResults(ending) {
  if (shown && partialCounts) sayPartial(ending);
}
