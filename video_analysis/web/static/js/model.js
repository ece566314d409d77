/* The model's state, shown before anyone uploads: loading, ready, or not loadable and why (GET health).
 *
 * An upload made while the model loads waits in the server's queue, so Start stays usable then. A model
 * that could not be loaded disables it: the server refuses uploads until its next try (model.nextAttemptAt,
 * when the model hub could not be reached) or for good. /health is asked every few seconds until the
 * model is ready, then no more (each read costs the server microseconds).
 */
import { serviceHealth } from "./api.js";
import { byId } from "./dom.js";
import { refuseUploads } from "./page.js";

const POLL_MS = 3000;            // while the model loads, or waits for its next try (the line counts down)
const POLL_UNAVAILABLE_MS = 15000;  // a model that will not be tried again (an operator may restart the service)

const line = byId("model-state");

let timer = null;

function show(state, text) {
  line.setAttribute("data-model", state);
  line.textContent = text;
  refuseUploads(state === "unavailable" || state === "retrying");
}

/* "14:05:30 (in about 4 min)": the local time of an ISO instant and how far off it is; null if it is not a time. */
function when(iso) {
  const at = new Date(iso);
  if (isNaN(at.getTime())) return null;
  const seconds = Math.max(0, Math.round((at.getTime() - Date.now()) / 1000));
  const away = seconds < 60 ? "in " + seconds + " s" : "in about " + Math.round(seconds / 60) + " min";
  return at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" }) + " (" + away + ")";
}

function sentence(text) {
  const s = (typeof text === "string" ? text : "").trim();
  return s && !/[.!?]$/.test(s) ? s + "." : s;
}

/* `text` without its sentence that holds `needle` (the server's own word on the next try, in UTC), which
 * the page says in local time instead. */
function withoutSentenceHolding(text, needle) {
  const at = needle ? text.indexOf(needle) : -1;
  if (at < 0) return text;
  const start = text.lastIndexOf(". ", at) + 1;  // 0: the text's first sentence
  const end = text.indexOf(". ", at);
  return (text.slice(0, start) + (end < 0 ? "" : text.slice(end + 1))).trim();
}

/* Shows what a /health body says; returns how long to wait before asking again (null: not again). */
function showHealth(body) {
  const model = (body && body.model) || {};
  if (model.loaded === true) {
    show("ready", "Model ready: " + (model.id || "the model") + (model.device ? " on " + model.device : "") + ".");
    return null;
  }
  if (body.status === "degraded") {
    // The reason names the model and says why (and, for a model hub out of reach, what to do).
    const reason = sentence(body.reason) || "The model could not be loaded.";
    const next = model.nextAttemptAt ? when(model.nextAttemptAt) : null;
    if (next) {
      const why = sentence(withoutSentenceHolding(reason, model.nextAttemptAt)) || "The model could not be loaded.";
      show("retrying", why + " The server tries again at " + next + "; uploads are off until then.");
      return POLL_MS;
    }
    show("unavailable", reason + " No video can be analyzed until the service is fixed, so uploads are off.");
    return POLL_UNAVAILABLE_MS;
  }
  show("loading", "Model loading… A video uploaded now waits until it is ready.");
  return POLL_MS;
}

async function check() {
  timer = null;
  let answer;
  try {
    answer = await serviceHealth();
  } catch (e) {
    show("unknown", "The server could not be reached to check the model; trying again.");
    timer = setTimeout(check, POLL_MS);
    return;
  }
  if (!answer.body || typeof answer.body !== "object" || !answer.body.model) {
    // Not the service's health (a proxy's error page, say): the upload itself will say what is wrong.
    show("unknown", "The model's state could not be read (HTTP " + answer.status + "); uploads still work if it is ready.");
    timer = setTimeout(check, POLL_UNAVAILABLE_MS);
    return;
  }
  const wait = showHealth(answer.body);
  if (wait !== null) timer = setTimeout(check, wait);
}

export function watchModel() {
  if (timer) clearTimeout(timer);
  check();
}
