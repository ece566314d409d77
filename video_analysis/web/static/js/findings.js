/* What an analysis found: highlights as a list (best first) or workout steps as a table,
 * each with its mark on the timeline; or a sentence saying why nothing was found.
 */
import { byId, clearChildren, make, plural } from "./dom.js";
import { seconds } from "./format.js";
import { addMark, sayNothingToMark, seekOnClick, trackTime } from "./timeline.js";

const STEP_COLOURS = 6;  // .step-colour-0 … -5 in style.css

const listTitle = byId("list-title");
const emptyNote = byId("empty-note");
const highlightList = byId("highlight-list");
const stepsWrap = byId("steps-wrap");
const stepsBody = byId("steps-body");

function start(title, showList, showTable) {
  listTitle.textContent = title;
  clearChildren(highlightList);
  clearChildren(stepsBody);
  highlightList.hidden = !showList;
  stepsWrap.hidden = !showTable;
  emptyNote.hidden = true;
}

function sayNothingFound(sentence, timelineText) {
  emptyNote.textContent = sentence;
  emptyNote.hidden = false;
  sayNothingToMark(timelineText);
}

function highlightItem(h, index) {
  const score = Number(h.significance_score) || 0;
  const label = "Highlight " + (index + 1) + ": " + h.timestamp_formatted + ", score " + h.significance_score + " of 10";
  const mark = addMark(h.start_time, h.end_time, label, "score-mark", { "--strength": String(0.35 + score / 15.4) });
  const button = make("button", "highlight-item");
  button.type = "button";
  button.setAttribute("data-testid", "highlight-item");
  button.setAttribute("data-start", String(h.start_time));
  button.setAttribute("aria-label", label + ". Play from here.");
  const head = make("span", "item-head");
  head.appendChild(make("span", "rank", index + 1));
  head.appendChild(make("span", "time", h.timestamp_formatted));
  head.appendChild(make("span", "score score-" + Math.max(1, Math.min(10, score)), score + "/10"));
  button.appendChild(head);
  button.appendChild(make("span", "description", h.description || "No description."));
  seekOnClick(button, h.start_time);
  trackTime(h.start_time, h.end_time, [button, mark]);
  const li = make("li");
  li.appendChild(button);
  return li;
}

export function showHighlights(data) {
  const highlights = data.highlights || [];
  start(highlights.length ? plural(highlights.length, "highlight") + ", best first" : "Highlights",
    highlights.length > 0, false);
  highlights.forEach((h, index) => highlightList.appendChild(highlightItem(h, index)));
  if (highlights.length) return;

  const analyses = data.all_analyses || [];
  const unscored = analyses.filter((a) => a.significance_score === null || a.significance_score === undefined).length;
  const minimum = data.settings && data.settings.min_significance;
  let text = "No highlights found: no segment scored " + (minimum ? "at least " + minimum + "/10" : "high enough") + ".";
  if (unscored) text += " The model gave no readable score for " + unscored + " of " + plural(analyses.length, "segment") + ".";
  text += " Every segment's answer is listed below; a lower minimum score may find more.";
  sayNothingFound(text, "No highlights to mark");
}

function stepRow(step, index, colour) {
  const name = step.exercise_name || "exercise";
  const time = step.timestamp_formatted;
  const label = "Step " + (index + 1) + ": " + name + ", " + time;
  const mark = addMark(step.start_timestamp, step.end_timestamp, label, "step-mark " + colour);
  const row = make("tr", "step-item");
  row.setAttribute("data-testid", "step-item");
  row.setAttribute("data-start", String(step.start_timestamp));
  const nameCell = make("td", "exercise");
  const button = make("button", "row-button");
  button.type = "button";
  button.setAttribute("aria-label", label + ". Play from here.");
  button.appendChild(make("span", "swatch " + colour));
  button.appendChild(make("span", "exercise-name", name));
  nameCell.appendChild(button);
  // The server's stand-in description ("squat from 00:00-00:02") would only repeat the row.
  if (step.description && step.description !== name + " from " + time) {
    nameCell.appendChild(make("span", "step-description", step.description));
  }
  row.appendChild(nameCell);
  row.appendChild(make("td", "time", time));
  row.appendChild(make("td", "num", seconds(step.duration)));
  // The whole row seeks on click; its button makes it keyboard operable.
  seekOnClick(row, step.start_timestamp);
  trackTime(step.start_timestamp, step.end_timestamp, [row, mark]);
  return row;
}

export function showSteps(data) {
  const steps = data.exercise_steps || [];
  start(steps.length ? plural(steps.length, "exercise step") : "Exercise steps", false, steps.length > 0);
  const colours = {};  // one colour per exercise name, in order of appearance
  let next = 0;
  steps.forEach((step, index) => {
    const name = step.exercise_name || "exercise";
    if (!(name in colours)) { colours[name] = next % STEP_COLOURS; next += 1; }
    stepsBody.appendChild(stepRow(step, index, "step-colour-" + colours[name]));
  });
  if (!steps.length) {
    sayNothingFound("No exercise found: every segment looked like rest, or the model named no exercise. "
      + "Every segment's answer is listed below.", "No exercise steps to mark");
  }
}
