/* The results section: the summary line, the player and timeline, the findings, every segment. */
import { byId } from "./dom.js";
import { showHighlights, showSteps } from "./findings.js";
import { clock, seconds } from "./format.js";
import { showSegments } from "./segments.js";
import { playLocalFile, resetTimeline, showStart, unloadPlayer } from "./timeline.js";

const results = byId("results");
const summary = byId("summary");

export function hideResults() {
  results.hidden = true;
  unloadPlayer();
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

/* `data` is the results answer's `data`; `file` is the run's own video, played here. */
export function showResults(type, data, file) {
  const duration = Number((data.video || {}).duration_seconds) || 0;
  const workout = type === "workout";
  summary.textContent = summaryLine(data, duration);
  playLocalFile(file);
  resetTimeline(duration, workout ? "Timeline of exercise steps" : "Timeline of highlights");
  if (workout) showSteps(data); else showHighlights(data);
  showSegments(workout, data);
  results.hidden = false;
  showStart();
  results.scrollIntoView({ behavior: "smooth", block: "start" });
}
