/* Choosing the video: the file picker and the drop zone around it. */
import { byId } from "./dom.js";
import { bytes } from "./format.js";
import { clearError, formIsBusy, showError } from "./page.js";

const dropZone = byId("drop-zone");
const fileInput = byId("file-input");
const fileName = byId("file-name");
const dropTitle = byId("drop-title");

let chosen = null;  // the file in the picker or dropped on the zone
let dragDepth = 0;  // dragenter/dragleave also fire for the zone's children

export function chosenFile() {
  return chosen;
}

export function focusPicker() {
  fileInput.focus();
}

function choose(file) {
  if (!file) return;
  chosen = file;
  fileName.textContent = file.name + " · " + bytes(file.size);
  dropTitle.textContent = "Drop another video to replace it";
  dropZone.classList.add("has-file");
  clearError();
}

export function forgetChosenFile() {
  chosen = null;
  fileInput.value = "";
  fileName.textContent = "No video chosen yet.";
  dropTitle.textContent = "Drop a video here";
  dropZone.classList.remove("has-file");
}

function hasFiles(event) {
  const types = event.dataTransfer && event.dataTransfer.types;
  return !!types && Array.prototype.indexOf.call(types, "Files") !== -1;
}

export function bindFileChoice() {
  fileInput.addEventListener("change", () => {
    if (fileInput.files && fileInput.files.length) choose(fileInput.files[0]);
  });
  dropZone.addEventListener("dragenter", (event) => {
    if (!hasFiles(event) || formIsBusy()) return;
    event.preventDefault();
    dragDepth += 1;
    dropZone.classList.add("is-over");
  });
  dropZone.addEventListener("dragover", (event) => {
    if (!hasFiles(event) || formIsBusy()) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
  });
  dropZone.addEventListener("dragleave", () => {
    dragDepth = Math.max(0, dragDepth - 1);
    if (!dragDepth) dropZone.classList.remove("is-over");
  });
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    dragDepth = 0;
    dropZone.classList.remove("is-over");
    if (formIsBusy()) return;
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    try { fileInput.files = files; } catch (e) { /* older browsers: keep our own reference */ }
    choose(files[0]);
    if (files.length > 1) showError("Drop one video at a time; the first one was chosen.");
  });
  // A file dropped next to the zone must not make the browser navigate away from the page.
  window.addEventListener("dragover", (event) => { if (hasFiles(event)) event.preventDefault(); });
  window.addEventListener("drop", (event) => { if (hasFiles(event)) event.preventDefault(); });
}
