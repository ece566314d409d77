/* What the page is doing (idle | uploading | processing | completed | cancelled | failed),
 * which controls that leaves usable (and whether the model lets anyone upload), and the error area.
 */
import { byId } from "./dom.js";
import { setStatus } from "./progress.js";

const main = byId("main");
const fields = byId("form-fields");
const start = byId("start");
const resetSettings = byId("reset-settings");
const cancel = byId("cancel");
const newAnalysis = byId("new-analysis");
const error = byId("error");

let state = "idle";
let uploadsRefused = false;  // the model cannot be loaded, and the server will not try again

export function currentState() {
  return state;
}

export function setState(next) {
  state = next;
  main.setAttribute("data-state", next);
  const busy = next === "uploading" || next === "processing";
  fields.disabled = busy;
  start.disabled = busy || uploadsRefused;
  resetSettings.disabled = busy;
  cancel.hidden = !busy;
  cancel.disabled = false;
  newAnalysis.hidden = busy;  // partial results show while the job runs; Cancel stops it
  start.textContent = busy ? "Working…" : "Analyze video";
}

/* No upload can succeed while the model cannot be loaded (js/model.js says why); the Start button waits. */
export function refuseUploads(refused) {
  uploadsRefused = refused;
  start.disabled = state === "uploading" || state === "processing" || refused;
}

/* The form's fields are disabled while a run is under way (drops are ignored then). */
export function formIsBusy() {
  return fields.disabled;
}

export function showError(sentence) {
  error.textContent = sentence;
  error.hidden = false;
}

export function clearError() {
  error.textContent = "";
  error.hidden = true;
}

/* The run ended without results: say why in the error area and in the status line. */
export function fail(sentence, statusLine) {
  setState("failed");
  setStatus(statusLine || "The analysis did not finish.");
  showError(sentence);
}

export function enableCancel(enabled) {
  cancel.disabled = !enabled;
}
