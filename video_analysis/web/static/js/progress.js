/* The progress panel: bytes uploaded, the job's progress, and the status line. */
import { byId } from "./dom.js";
import { bytes } from "./format.js";

const panel = byId("progress-panel");
const uploadBar = byId("upload-progress");
const uploadText = byId("upload-text");
const analysisBar = byId("progress");
const analysisText = byId("progress-text");
const statusMessage = byId("status-message");

export function showPanel(shown) {
  panel.hidden = !shown;
}

export function setStatus(text) {
  statusMessage.textContent = text;
}

export function setUpload(fraction, loaded, total) {
  const pct = Math.round(Math.max(0, Math.min(1, fraction)) * 100);
  uploadBar.value = pct;
  uploadBar.textContent = pct + "%";
  uploadText.textContent = total ? pct + "% · " + bytes(loaded) + " of " + bytes(total) : pct + "%";
}

export function setUploadNote(text) {
  uploadText.textContent = text;
}

/* The job's status answer; the bar never goes backwards. */
export function setAnalysis(status) {
  const pct = Math.max(analysisPercent(), Math.min(100, Number(status.progress) || 0));
  analysisBar.value = pct;
  analysisBar.textContent = Math.round(pct) + "%";
  let text = Math.floor(pct) + "%";
  // Every segment is done by then; the status line says how far the rendering is.
  if (status.currentStep === "rendering") text += " · rendering the reel";
  else if (status.segmentsTotal) text += " · " + status.segmentsDone + " of " + status.segmentsTotal + " segments";
  analysisText.textContent = text;
}

export function analysisPercent() {
  return Number(analysisBar.value) || 0;
}

export function setAnalysisNote(text) {
  analysisText.textContent = text;
}

export function resetProgress() {
  setUpload(0);
  analysisBar.value = 0;
  analysisBar.textContent = "0%";
  analysisText.textContent = "waiting";
  setStatus("");
}
