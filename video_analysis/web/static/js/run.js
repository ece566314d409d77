/* The current run: its number, its file and its session on the server.
 *
 * Every callback of a run checks that its number is still the current one, so
 * answers still on their way for an abandoned run change nothing.
 */
import { byId } from "./dom.js";
import { forgetSession } from "./api.js";

const main = byId("main");

let number = 0;
let file = null;       // the file of the current (or last) run, played in the results
let sessionId = null;  // the server's id for the current (or last) run

export function startRun(video) {
  number += 1;
  file = video;
  return number;
}

export function abandonRun() {
  number += 1;
}

export function isCurrent(run) {
  return run === number;
}

export function runFile() {
  return file;
}

export function currentSession() {
  return sessionId;
}

export function setSession(id) {
  sessionId = id;
  main.setAttribute("data-session-id", id);
}

/* Deletes the last run's files on the server: nobody will look at them again. */
export function forgetCurrentSession() {
  if (!sessionId) return;
  forgetSession(sessionId);
  sessionId = null;
  main.removeAttribute("data-session-id");
}
