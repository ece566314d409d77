/* Starting a run: check there is a video, upload it with its settings, and hand the job to status.js. */
import { problemSentence, upload } from "./api.js";
import { chosenFile, focusPicker } from "./file-choice.js";
import { clearError, currentState, fail, setState, showError } from "./page.js";
import { analysisForm } from "./parameters.js";
import { resetProgress, setStatus, setUpload, setUploadNote, showPanel } from "./progress.js";
import { hideResults } from "./results.js";
import { abandonRun, forgetCurrentSession, isCurrent, setSession, startRun } from "./run.js";
import { followJob, stopPolling } from "./status.js";

let request = null;  // the upload in flight

export function startAnalysis(form) {
  clearError();
  const file = chosenFile();
  if (!file) {
    showError("Choose a video first: drop it on the box above, or use “choose a file”.");
    focusPicker();
    return;
  }
  if (!form.reportValidity()) return;

  stopPolling();
  forgetCurrentSession();
  hideResults();
  const run = startRun(file);
  const data = analysisForm(file);
  resetProgress();
  showPanel(true);
  setState("uploading");
  setStatus("Uploading " + file.name + "…");

  request = upload(data, {
    progress(loaded, total) {
      if (isCurrent(run)) setUpload(loaded / total, loaded, total);
    },
    sent() {
      if (!isCurrent(run)) return;
      setUpload(1, file.size, file.size);
      setStatus("Upload complete; the server is checking the video…");
    },
    answered(status, body) {
      if (!isCurrent(run)) return;
      request = null;
      if (status === 202 && body && body.sessionId) {
        setSession(body.sessionId);
        setUpload(1, file.size, file.size);
        setState("processing");
        setStatus(body.message || "Queued.");
        followJob(run);
      } else {
        fail(problemSentence(status, body), "The upload was refused.");
        showPanel(false);  // no job was made; the error says why
      }
    },
    lost() {
      if (!isCurrent(run)) return;
      request = null;
      fail("The upload did not reach the server: the connection was lost or refused. The file may be larger than "
        + "the server accepts, or the service may be down. Try again.", "Upload failed.");
      showPanel(false);
    },
  });
}

/* Cancel pressed while uploading: abort the upload. False when no upload is in flight. */
export function cancelUpload() {
  if (currentState() !== "uploading" || !request) return false;
  abandonRun();
  request.abort();
  request = null;
  setState("cancelled");
  setUploadNote("cancelled");
  setStatus("Upload cancelled; nothing was analyzed.");
  return true;
}
