/* The server's picture of each highlight or exercise step (its `thumbnailUrl`), in its row and on its mark.
 *
 * Results so far carry none (null) and the final results do. A row keeps its element from one to the
 * other (dom.js KeyedNodes), so the picture goes into the row's slot in place: no flicker, focus kept.
 */
import { pageUrl } from "./api.js";
import { make } from "./dom.js";

/* An empty place for a thumbnail, shaped like the video (`data.video`), so nothing moves when it arrives. */
export function thumbnailSlot(className, video) {
  const slot = make("span", "thumb is-empty " + className);
  const width = Number(video && video.width);
  const height = Number(video && video.height);
  if (width > 0 && height > 0) {
    slot.style.aspectRatio = width + " / " + height;
    slot.dataset.width = String(width);
    slot.dataset.height = String(height);
  }
  return slot;
}

/* Puts the picture at `url` (null: none) into `slot`, described by `alt`; the same picture is left alone. */
export function showThumbnail(slot, url, alt) {
  if (!slot) return;
  const src = pageUrl(url);
  const old = slot.querySelector("img");
  slot.classList.toggle("is-empty", !src);
  if (!src) {
    if (old) old.remove();
    return;
  }
  if (old && old.getAttribute("src") === src) {
    old.alt = alt;
    return;
  }
  const img = make("img");
  img.setAttribute("data-testid", "thumbnail");
  img.alt = alt;
  img.loading = "lazy";
  img.decoding = "async";
  // The video's size gives the picture its shape before it loads; CSS sets the size it is shown at.
  if (slot.dataset.width) {
    img.width = Number(slot.dataset.width);
    img.height = Number(slot.dataset.height);
  }
  img.src = src;
  if (old) old.replaceWith(img); else slot.appendChild(img);
}

/* What a thumbnail shows, in words: "Frame from highlight 1, 00:01-00:02". */
export function thumbnailAlt(what, time) {
  return "Frame from " + what + ", " + time;
}
