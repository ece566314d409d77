/* The reel: one MP4 of what was found, in time order, rendered by the server when the upload asked for it
 * (`reel`). A second player plays it from the server (which answers Range requests, so it seeks), with a
 * link to download it. No reel: neither shows, and when one was asked for, the server's sentence says why.
 */
import { pageUrl } from "./api.js";
import { byId } from "./dom.js";
import { bytes, seconds } from "./format.js";

const section = byId("reel-section");
const title = byId("reel-title");
const what = byId("reel-what");
const media = byId("reel-media");
const actions = byId("reel-actions");
const player = byId("reel-player");
const download = byId("reel-download");
const facts = byId("reel-facts");
const note = byId("reel-note");

/* Hidden, and the player let go of its file (the session it came from may be deleted next). */
export function hideReel() {
  section.hidden = true;
  if (player.getAttribute("src")) {
    player.pause();
    player.removeAttribute("src");
    player.load();
  }
  download.removeAttribute("href");
  media.hidden = true;
  what.hidden = true;
  actions.hidden = true;
  note.hidden = true;
}

function sayNote(text) {
  note.textContent = text;
  note.hidden = !text;
}

/* "match-reel.mp4" for "match.webm": the name the download is saved under. */
function fileName(video) {
  const name = (video && video.filename) || "video";
  return name.replace(/\.[^.]*$/, "") + "-reel.mp4";
}

function reelContents(type, settings) {
  if (type !== "workout") return "The highlights one after another, in the order they happen.";
  const most = settings.reel_seconds_per_step;
  return "The exercise steps one after another" + (most ? ", at most " + seconds(most) + " of each." : ".");
}

/* The final results' reel (`data.reelUrl`, `reelDuration`, `reelSize`); `message`: the job's last status line,
 * which says why when a reel was asked for and not made. */
export function showReel(type, data, message) {
  const url = pageUrl(data.reelUrl);
  const asked = !!(data.settings && data.settings.reel);
  title.textContent = type === "workout" ? "Reel of the exercise steps" : "Highlight reel";
  what.textContent = reelContents(type, data.settings || {});
  if (!url) {
    hideReel();
    if (asked && message) {
      sayNote(message);
      section.hidden = false;
    }
    return;
  }
  if (player.getAttribute("src") !== url) player.src = url;  // given once: drawing again does not reload it
  download.href = url;
  download.setAttribute("download", fileName(data.video));
  const bits = [];
  if (data.reelDuration !== null && data.reelDuration !== undefined) bits.push(seconds(data.reelDuration));
  if (data.reelSize !== null && data.reelSize !== undefined) bits.push(bytes(Number(data.reelSize)));
  facts.textContent = bits.length ? "MP4 · " + bits.join(" · ") : "MP4";
  sayNote("");
  media.hidden = false;
  what.hidden = false;
  actions.hidden = false;
  section.hidden = false;
}

export function bindReel() {
  player.addEventListener("error", () => {
    if (!player.getAttribute("src")) return;
    sayNote("This browser cannot play the reel here; download it to watch it.");
  });
}
