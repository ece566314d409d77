/* The player and the timeline under it: marks placed by their start and end, the playhead,
 * seeking, and marking what is playing as current.
 */
import { byId, clearChildren, make } from "./dom.js";
import { clock } from "./format.js";

const player = byId("player");
const playerNote = byId("player-note");
const timeline = byId("timeline");
const playhead = byId("playhead");
const scaleMid = byId("scale-mid");
const scaleEnd = byId("scale-end");

let duration = 0;     // of the analyzed video, in seconds
let timedItems = [];  // [{start, end, nodes: [elements to mark as current]}]
let videoUrl = null;  // object URL of the run's file

function markCurrent(t) {
  if (duration > 0) playhead.style.left = Math.min(100, (t / duration) * 100) + "%";
  for (const item of timedItems) {
    const on = t >= item.start && (t < item.end || (item.end >= duration && t >= item.end));
    for (const node of item.nodes) node.classList.toggle("is-current", on);
  }
}

/* Moves the player, without starting it: the page never plays sound unasked. */
function seek(start) {
  const t = Math.max(0, Number(start) || 0);
  try { player.currentTime = t; } catch (e) { /* no media yet */ }
  markCurrent(t);
}

export function seekOnClick(node, start) {
  node.addEventListener("click", () => seek(start));
}

/* Plays the chosen file itself (an object URL), so nothing is downloaded again. */
export function playLocalFile(file) {
  if (videoUrl) URL.revokeObjectURL(videoUrl);
  videoUrl = URL.createObjectURL(file);
  playerNote.hidden = true;
  player.src = videoUrl;
}

export function unloadPlayer() {
  player.pause();
  player.removeAttribute("src");
  player.load();
  if (videoUrl) URL.revokeObjectURL(videoUrl);
  videoUrl = null;
  playerNote.hidden = true;
  timedItems = [];
}

/* An empty timeline over `seconds` of video, its scale written at the middle and the end. */
export function resetTimeline(seconds, label) {
  duration = seconds;
  clearChildren(timeline);
  timeline.appendChild(playhead);
  playhead.style.left = "0%";
  scaleMid.textContent = duration ? clock(duration / 2) : "";
  scaleEnd.textContent = duration ? clock(duration) : "";
  timeline.setAttribute("aria-label", label);
  timedItems = [];
}

export function addMark(start, end, label, className, style) {
  const mark = make("button", "timeline-mark " + (className || ""));
  mark.type = "button";
  mark.setAttribute("data-testid", "timeline-mark");
  mark.setAttribute("data-start", String(start));
  mark.setAttribute("aria-label", label);
  mark.title = label;
  const left = duration > 0 ? (start / duration) * 100 : 0;
  const width = duration > 0 ? ((end - start) / duration) * 100 : 0;
  mark.style.left = Math.max(0, Math.min(100, left)) + "%";
  // 2px less than its share, so that marks of adjacent segments stay apart.
  mark.style.width = "calc(" + Math.max(0.8, Math.min(100 - left, width)) + "% - 2px)";
  if (style) for (const key in style) mark.style.setProperty(key, style[key]);
  seekOnClick(mark, start);
  timeline.appendChild(mark);
  return mark;
}

/* `nodes` are marked current while the player is between start and end. */
export function trackTime(start, end, nodes) {
  timedItems.push({ start, end, nodes });
}

export function sayNothingToMark(text) {
  const none = make("span", "timeline-empty", text);
  none.setAttribute("aria-hidden", "true");
  timeline.appendChild(none);
}

export function showStart() {
  markCurrent(0);
}

export function bindTimeline() {
  player.addEventListener("timeupdate", () => markCurrent(player.currentTime));
  player.addEventListener("seeked", () => markCurrent(player.currentTime));
  player.addEventListener("error", () => {
    if (!player.getAttribute("src")) return;
    playerNote.textContent = "This browser cannot play this video's format, so there is no preview here. "
      + "The times below are still right.";
    playerNote.hidden = false;
  });
  // Clicking the bare timeline (not a mark) seeks to that moment.
  timeline.addEventListener("click", (event) => {
    if (event.target !== timeline || duration <= 0) return;
    const box = timeline.getBoundingClientRect();
    seek(((event.clientX - box.left) / box.width) * duration);
  });
}
