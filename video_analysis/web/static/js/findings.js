/* What an analysis found: highlights as a list (best first) or workout steps as a table,
 * each with its thumbnail and its mark on the timeline; or a sentence saying why nothing was found.
 *
 * Drawn again each time partial results grow: an item that has not changed keeps its
 * elements (dom.js KeyedNodes), so the list grows in place; a thumbnail arriving is not a change
 * of the item, it is put into the item's place for it (thumbnails.js).
 */
import { KeyedNodes, byId, make, plural } from "./dom.js";
import { seconds } from "./format.js";
import { showThumbnail, thumbnailAlt, thumbnailSlot } from "./thumbnails.js";
import { drawMarks, sayNothingToMark, seekOnClick, trackTimes } from "./timeline.js";

const STEP_COLOURS = 6;  // .step-colour-0 … -5 in style.css

const listTitle = byId("list-title");
const emptyNote = byId("empty-note");
const highlightList = byId("highlight-list");
const stepsWrap = byId("steps-wrap");
const highlightItems = new KeyedNodes(highlightList);
const stepRows = new KeyedNodes(byId("steps-body"));

export function clearFindings() {
  highlightItems.clear();
  stepRows.clear();
  emptyNote.hidden = true;
}

function start(title, showList, showTable) {
  listTitle.textContent = title;
  highlightList.hidden = !showList;
  stepsWrap.hidden = !showTable;
}

/* Why nothing is listed (a sentence), or null when something is. */
function sayNothingFound(sentence, timelineText) {
  emptyNote.textContent = sentence || "";
  emptyNote.hidden = !sentence;
  sayNothingToMark(sentence ? timelineText : null);
}

/* Draws `items` ([{key, look, build, thumbnail: {url, alt}, mark: {start, end, label, className, style}}]) and
 * their marks, and ties each to its mark for the player's current time; `current(node)` is the element to mark,
 * if not the node. `video` (the results' `video`) gives the thumbnails their shape. */
function draw(list, items, video, current = (node) => node) {
  const nodes = list.render(items);
  nodes.forEach((node, i) => showThumbnail(node.querySelector(".thumb"), items[i].thumbnail.url, items[i].thumbnail.alt));
  const marks = drawMarks(items.map((item) => ({ key: item.key, ...item.mark, thumbnail: item.thumbnail })), video);
  trackTimes(items.map((item, i) => ({ start: item.mark.start, end: item.mark.end, nodes: [current(nodes[i]), marks[i]] })));
}

/* What an item looks like without its thumbnail, which arrives later and is put in place (see draw). */
function look(item, ...more) {
  const { thumbnailUrl, ...rest } = item;
  return JSON.stringify([rest, ...more]);
}

function highlightLabel(h, index) {
  return "Highlight " + (index + 1) + ": " + h.timestamp_formatted + ", score " + h.significance_score + " of 10";
}

function highlightItem(h, index, video) {
  const score = Number(h.significance_score) || 0;
  const button = make("button", "highlight-item");
  button.type = "button";
  button.setAttribute("data-testid", "highlight-item");
  button.setAttribute("data-start", String(h.start_time));
  button.setAttribute("aria-label", highlightLabel(h, index) + ". Play from here.");
  button.appendChild(thumbnailSlot("item-thumb", video));
  const body = make("span", "item-body");
  const head = make("span", "item-head");
  head.appendChild(make("span", "rank", index + 1));
  head.appendChild(make("span", "time", h.timestamp_formatted));
  head.appendChild(make("span", "score score-" + Math.max(1, Math.min(10, score)), score + "/10"));
  body.appendChild(head);
  body.appendChild(make("span", "description", h.description || "No description."));
  button.appendChild(body);
  seekOnClick(button, h.start_time);
  const li = make("li");
  li.appendChild(button);
  return li;
}

/* `partial`: the results so far of a run still going (nothing found yet is not nothing found). */
export function showHighlights(data, partial = false) {
  const highlights = data.highlights || [];
  const count = plural(highlights.length, "highlight") + (partial ? " so far" : "");
  start(highlights.length ? count + ", best first" : "Highlights", highlights.length > 0, false);
  stepRows.clear();
  const video = data.video || {};
  draw(highlightItems, highlights.map((h, index) => ({
    key: h.start_time,
    look: look(h, index, video.width, video.height),
    build: () => highlightItem(h, index, video),
    thumbnail: { url: h.thumbnailUrl, alt: thumbnailAlt("highlight " + (index + 1), h.timestamp_formatted) },
    mark: { start: h.start_time, end: h.end_time, label: highlightLabel(h, index), className: "score-mark",
            style: { "--strength": String(0.35 + (Number(h.significance_score) || 0) / 15.4) } },
  })), video, (li) => li.firstElementChild);
  if (highlights.length) {
    sayNothingFound(null);
    return;
  }
  const analyses = data.all_analyses || [];
  const minimum = data.settings && data.settings.min_significance;
  const bar = minimum ? "at least " + minimum + "/10" : "high enough";
  if (partial) {
    sayNothingFound("No highlights so far: no segment analyzed yet scored " + bar + ".", "No highlights yet");
    return;
  }
  const unscored = analyses.filter((a) => a.significance_score === null || a.significance_score === undefined).length;
  let text = "No highlights found: no segment scored " + bar + ".";
  if (unscored) text += " The model gave no readable score for " + unscored + " of " + plural(analyses.length, "segment") + ".";
  text += " Every segment's answer is listed below; a lower minimum score may find more.";
  sayNothingFound(text, "No highlights to mark");
}

function stepLabel(step, index) {
  return "Step " + (index + 1) + ": " + (step.exercise_name || "exercise") + ", " + step.timestamp_formatted;
}

function stepRow(step, index, colour, video) {
  const name = step.exercise_name || "exercise";
  const time = step.timestamp_formatted;
  const row = make("tr", "step-item");
  row.setAttribute("data-testid", "step-item");
  row.setAttribute("data-start", String(step.start_timestamp));
  const nameCell = make("td", "exercise");
  const button = make("button", "row-button");
  button.type = "button";
  button.setAttribute("aria-label", stepLabel(step, index) + ". Play from here.");
  button.appendChild(make("span", "swatch " + colour));
  button.appendChild(thumbnailSlot("row-thumb", video));
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
  return row;
}

export function showSteps(data, partial = false) {
  const steps = data.exercise_steps || [];
  const count = plural(steps.length, "exercise step") + (partial ? " so far" : "");
  start(steps.length ? count : "Exercise steps", false, steps.length > 0);
  highlightItems.clear();
  const colours = {};  // one colour per exercise name, in order of appearance
  let next = 0;
  const video = data.video || {};
  draw(stepRows, steps.map((step, index) => {
    const name = step.exercise_name || "exercise";
    if (!(name in colours)) { colours[name] = next % STEP_COLOURS; next += 1; }
    const colour = "step-colour-" + colours[name];
    return {
      key: step.start_timestamp,
      look: look(step, index, colour, video.width, video.height),
      build: () => stepRow(step, index, colour, video),
      thumbnail: { url: step.thumbnailUrl, alt: thumbnailAlt("step " + (index + 1) + ", " + name, step.timestamp_formatted) },
      mark: { start: step.start_timestamp, end: step.end_timestamp, label: stepLabel(step, index),
              className: "step-mark " + colour },
    };
  }), video);
  if (steps.length) sayNothingFound(null);
  else if (partial) sayNothingFound("No exercise so far in the segments analyzed yet.", "No exercise steps yet");
  else {
    sayNothingFound("No exercise found: every segment looked like rest, or the model named no exercise. "
      + "Every segment's answer is listed below.", "No exercise steps to mark");
  }
}
