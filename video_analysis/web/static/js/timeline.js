/* The player and the timeline under it: marks placed by their start and end (each showing its thumbnail
 * on hover and on keyboard focus), the playhead, seeking, and marking what is playing as current.
 */
import { KeyedNodes, byId, make } from "./dom.js";
import { clock } from "./format.js";
import { showThumbnail, thumbnailSlot } from "./thumbnails.js";

const player = byId("player");
const playerNote = byId("player-note");
const timeline = byId("timeline");
const playhead = byId("playhead");
const scaleMid = byId("scale-mid");
const scaleEnd = byId("scale-end");

let duration = 0;     // of the analyzed video, in seconds
let timedItems = [];  // [{start, end, nodes: [elements to mark as current]}]
let videoUrl = null;  // object URL of the run's file
const marks = new KeyedNodes(timeline, playhead);  // kept across renders of growing partial results
let nothingToMark = null;  // the sentence shown on an empty timeline

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

/* The timeline over `seconds` of video, its scale written at the middle and the end; its marks stay. */
export function setTimeline(seconds, label) {
  duration = seconds;
  scaleMid.textContent = duration ? clock(duration / 2) : "";
  scaleEnd.textContent = duration ? clock(duration) : "";
  timeline.setAttribute("aria-label", label);
}

/* No marks and the playhead at the start, for a new run's results. */
export function clearTimeline() {
  marks.clear();
  sayNothingToMark(null);
  timedItems = [];
  playhead.style.left = "0%";
}

function buildMark(m, video) {
  const mark = make("button", "timeline-mark " + (m.className || ""));
  mark.type = "button";
  mark.setAttribute("data-testid", "timeline-mark");
  mark.setAttribute("data-start", String(m.start));
  mark.setAttribute("aria-label", m.label);
  const left = duration > 0 ? (m.start / duration) * 100 : 0;
  // The preview opens under the mark towards the timeline's middle, so it never sticks out of the page.
  const preview = make("span", "mark-preview " + (left < 50 ? "from-left" : "from-right"));
  preview.appendChild(thumbnailSlot("preview-thumb", video));
  preview.appendChild(make("span", "preview-label", m.label));
  mark.appendChild(preview);
  const width = duration > 0 ? ((m.end - m.start) / duration) * 100 : 0;
  mark.style.left = Math.max(0, Math.min(100, left)) + "%";
  // 2px less than its share, so that marks of adjacent segments stay apart.
  mark.style.width = "calc(" + Math.max(0.8, Math.min(100 - left, width)) + "% - 2px)";
  if (m.style) for (const key in m.style) mark.style.setProperty(key, m.style[key]);
  seekOnClick(mark, m.start);
  return mark;
}

/* The marks, in order: [{key, start, end, label, className, style, thumbnail: {url, alt}}]; a mark drawn before
 * with the same everything but its thumbnail is kept as it is, and its thumbnail put in. `video` (the results'
 * `video`) gives the thumbnails their shape. Returns the mark elements. */
export function drawMarks(list, video) {
  const nodes = marks.render(list.map((m) => ({
    key: m.key,
    look: JSON.stringify([{ ...m, thumbnail: null }, duration, video.width, video.height]),
    build: () => buildMark(m, video),
  })));
  nodes.forEach((node, i) => showThumbnail(node.querySelector(".thumb"), list[i].thumbnail.url, list[i].thumbnail.alt));
  return nodes;
}

/* `items`: [{start, end, nodes}], each marked current while the player is between start and end. */
export function trackTimes(items) {
  timedItems = items;
  markCurrent(player.currentTime || 0);
}

/* A sentence across an empty timeline, or none (null). */
export function sayNothingToMark(text) {
  if (nothingToMark && (!text || nothingToMark.textContent !== text)) {
    nothingToMark.remove();
    nothingToMark = null;
  }
  if (!text || nothingToMark) return;
  nothingToMark = make("span", "timeline-empty", text);
  nothingToMark.setAttribute("aria-hidden", "true");
  timeline.appendChild(nothingToMark);
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
