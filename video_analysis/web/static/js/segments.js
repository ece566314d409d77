/* Every analyzed segment, with its score or exercise, how its answer was got and the model's whole answer,
 * in a collapsed table.
 * Partial results add rows as segments finish; rows already shown stay as they are.
 */
import { KeyedNodes, byId, make, plural } from "./dom.js";
import { clock, clockRange } from "./format.js";
import { seekOnClick } from "./timeline.js";

const details = byId("segments");
const detailsSummary = byId("segments-summary");
const valueColumn = byId("segment-col");
const rows = new KeyedNodes(byId("segments-body"));

function scoreText(score) {
  return score === null || score === undefined ? "no score" : score + "/10";
}

/* How the segment's answer was got: the frames the model saw, or the segment whose answer it repeats
 * (nothing had changed since). Answers kept by a version before this was recorded have neither. */
function framesText(segment) {
  if (segment.reused_from !== null && segment.reused_from !== undefined) return "same as segment " + segment.reused_from;
  if (segment.frames_analyzed === null || segment.frames_analyzed === undefined) return "not recorded";
  return plural(segment.frames_analyzed, "frame");
}

/* Collapsed and empty, for a new run's results. */
export function clearSegments() {
  rows.clear();
  details.open = false;
}

function segmentRow(workout, segment) {
  const tr = make("tr");
  tr.appendChild(make("td", "num", segment.segment));
  const timeCell = make("td", "time");
  const button = make("button", "link-button", clockRange(segment.start_time, segment.end_time));
  button.type = "button";
  button.setAttribute("aria-label", "Play segment " + segment.segment + " from " + clock(segment.start_time));
  seekOnClick(button, segment.start_time);
  timeCell.appendChild(button);
  tr.appendChild(timeCell);
  tr.appendChild(make("td", workout ? "exercise" : "num", workout ? segment.exercise : scoreText(segment.significance_score)));
  const frames = make("td", "frames", framesText(segment));
  frames.setAttribute("data-testid", "segment-frames");
  tr.appendChild(frames);
  tr.appendChild(make("td", "answer", segment.analysis || ""));
  return tr;
}

/* `total`: while results are partial, how many segments the whole video has (0 when final). */
export function showSegments(workout, data, total = 0) {
  const segments = (workout ? data.segment_analyses : data.all_analyses) || [];
  const count = total ? segments.length + " of " + total + " so far" : String(segments.length);
  detailsSummary.textContent = "Every analyzed segment (" + count + ")";
  valueColumn.textContent = workout ? "Exercise" : "Score";
  rows.render(segments.map((segment) => ({
    key: segment.segment,
    look: JSON.stringify([workout, segment]),
    build: () => segmentRow(workout, segment),
  })));
}
