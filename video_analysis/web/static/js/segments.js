/* Every analyzed segment, with its score or exercise and the model's whole answer, in a collapsed table. */
import { byId, clearChildren, make } from "./dom.js";
import { clock, clockRange } from "./format.js";
import { seekOnClick } from "./timeline.js";

const details = byId("segments");
const detailsSummary = byId("segments-summary");
const valueColumn = byId("segment-col");
const body = byId("segments-body");

function scoreText(score) {
  return score === null || score === undefined ? "no score" : score + "/10";
}

export function showSegments(workout, data) {
  const rows = (workout ? data.segment_analyses : data.all_analyses) || [];
  clearChildren(body);
  details.open = false;
  detailsSummary.textContent = "Every analyzed segment (" + rows.length + ")";
  valueColumn.textContent = workout ? "Exercise" : "Score";
  for (const segment of rows) {
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
    tr.appendChild(make("td", "answer", segment.analysis || ""));
    body.appendChild(tr);
  }
}
