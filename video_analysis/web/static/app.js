/* The web page at /: upload a video, follow the job, cancel it, show its results on a timeline.
 *
 * Plain JavaScript modules, no build step, no dependencies; guides/web-page.md
 * says what each module in js/ does. This file only wires the page's buttons
 * to them. The page talks only to the public API and /health, with URLs relative to the page.
 */
import { byId } from "./js/dom.js";
import { bindFileChoice, focusPicker, forgetChosenFile } from "./js/file-choice.js";
import { watchModel } from "./js/model.js";
import { clearError, setState } from "./js/page.js";
import { bindParameters, loadParameters } from "./js/parameters.js";
import { showPanel } from "./js/progress.js";
import { bindReel } from "./js/reel.js";
import { hideResults } from "./js/results.js";
import { abandonRun, forgetCurrentSession } from "./js/run.js";
import { cancelAnalysis, stopPolling } from "./js/status.js";
import { bindTimeline } from "./js/timeline.js";
import { cancelUpload, startAnalysis } from "./js/upload.js";

function startOver() {
  stopPolling();
  abandonRun();
  forgetCurrentSession();
  hideResults();
  showPanel(false);
  clearError();
  forgetChosenFile();
  setState("idle");
  window.scrollTo({ top: 0, behavior: "smooth" });
  focusPicker();
}

const form = byId("analysis-form");
form.addEventListener("submit", (event) => {
  event.preventDefault();
  startAnalysis(form);
});
byId("cancel").addEventListener("click", () => {
  if (!cancelUpload()) cancelAnalysis();
});
byId("new-analysis").addEventListener("click", startOver);
bindFileChoice();
bindParameters();
bindTimeline();
bindReel();
setState("idle");
loadParameters();
watchModel();
