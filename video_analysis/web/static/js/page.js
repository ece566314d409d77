/* What the page is doing (idle | uploading | processing | completed | cancelled | failed),
 * which controls that leaves usable, and the error area.
 */
import { byId } from "./dom.js";
import { setStatus } from "./progress.js";

const main = byId("main");
const fields = byId("form-fields");
const start = byId("start");
const resetSettings = byId("reset-settings");
const cancel = byId("cancel");
const error = byId("error");

let state = "idle";

export function currentState() {
  return state;
}

export function setState(next) {
  state = next;
  main.setAttribute("data-state", next);
  const busy = next === "uploading" || next === "processing";
  fields.disabled = busy;
  start.disabled = busy;
  resetSettings.disabled = busy;
  cancel.hidden = !busy;
  cancel.disabled = false;
  start.textContent = busy ? "Working…" : "Analyze video";
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
