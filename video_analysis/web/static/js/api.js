/* The HTTP calls the page makes, and the sentence to show when one goes wrong.
 *
 * URLs are relative to the page (no leading slash), so the page also works when
 * the service sits behind a path prefix.
 */

const VIDEO_API = "api/v1/video/";
const OPENAPI_DOCUMENT = "api/v1/openapi.json";
const HEALTH = "health";

export const NETWORK_SENTENCE =
  "The server could not be reached. Check your connection (and that the service is running), then try again.";

function parseJson(text) {
  try { return JSON.parse(text); } catch (e) { return null; }
}

/* The sentence to show for an error answer: the problem's `error`, never raw JSON. */
export function problemSentence(status, body) {
  if (body && typeof body === "object") {
    if (typeof body.error === "string" && body.error.trim()) return body.error.trim();
    if (typeof body.detail === "string" && body.detail.trim()) return body.detail.trim();
  }
  if (status === 413) return "The video is larger than this server accepts; upload a shorter or more compressed video.";
  if (status === 502 || status === 503 || status === 504) {
    return "The server is not available right now (HTTP " + status + "). Try again in a minute.";
  }
  if (status === 0) return "The server could not be reached. Check that it is running and try again.";
  return "The server answered with an unexpected error (HTTP " + status + "). Try again.";
}

/* One JSON call: {ok, status, body (null if not JSON), retryAfter}. Rejects only when the network fails. */
async function call(url, method = "GET") {
  const response = await fetch(url, { method, headers: { Accept: "application/json" }, cache: "no-store" });
  const body = parseJson(await response.text());
  return { ok: response.ok, status: response.status, body, retryAfter: response.headers.get("Retry-After") };
}

function sessionUrl(action, sessionId) {
  return VIDEO_API + action + "/" + encodeURIComponent(sessionId);
}

/* A URL the server sent (`/api/v1/video/reel/<id>.mp4`), relative to the page like every other call here,
 * so it also works behind a path prefix; null stays null. */
export function pageUrl(url) {
  if (typeof url !== "string" || !url) return null;
  return url.startsWith("/") && !url.startsWith("//") ? url.slice(1) : url;
}

export const openapiDocument = () => call(OPENAPI_DOCUMENT);
export const jobStatus = (sessionId) => call(sessionUrl("status", sessionId));
/* `partial`: the results so far of a job still running (the answer's `partial` says which it got). */
export const jobResults = (sessionId, partial = false) =>
  call(sessionUrl("results", sessionId) + (partial ? "?partial=true" : ""));
export const serviceHealth = () => call(HEALTH);
export const cancelJob = (sessionId) => call(sessionUrl("cancel", sessionId), "POST");

/* Deletes a finished run's files on the server; a failure does not matter, they expire on their own. */
export function forgetSession(sessionId) {
  call(sessionUrl("cleanup", sessionId), "DELETE").catch(() => {});
}

/* POSTs the form with XMLHttpRequest, which (unlike fetch) reports upload progress.
 *
 * `on` holds the callbacks progress(loaded, total), sent(), answered(status, body)
 * and lost(). Returns the request, whose abort() cancels the upload.
 */
export function upload(formData, on) {
  const request = new XMLHttpRequest();
  request.open("POST", VIDEO_API + "upload");
  request.setRequestHeader("Accept", "application/json");
  request.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) on.progress(event.loaded, event.total);
  });
  request.upload.addEventListener("load", () => on.sent());
  request.addEventListener("load", () => on.answered(request.status, parseJson(request.responseText)));
  request.addEventListener("error", () => on.lost());
  request.send(formData);
  return request;
}
