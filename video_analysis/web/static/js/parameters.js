/* The analysis type and its settings.
 *
 * Defaults and limits are not written here: they come from the server's OpenAPI
 * document (components.schemas, generated from the pydantic models the server
 * validates with). Each input is named after its field there; a field shows only
 * for the types whose schema has it. If the document cannot be read, the page
 * says so and leaves the fields empty, which the server reads as "use the
 * default", rather than guessing numbers. A yes/no field (`type: boolean`) is a checkbox, which is always
 * sent, as "true" or "false".
 */
import { byId, make } from "./dom.js";
import { openapiDocument } from "./api.js";

// Which of the document's schemas holds each analysis type's parameters.
const SCHEMA_NAMES = { highlights: "HighlightsParameters", workout: "WorkoutParameters" };
const TYPE_HINTS = {
  highlights: "Scores every segment 1–10 and keeps the best ones.",
  workout: "Names the exercise in every segment and merges repeats into steps.",
};
// The page's words for the choices it knows; a value the document adds shows as itself.
const CHOICE_WORDS = {
  segmentation: { fixed: "Fixed length", scenes: "At scene cuts" },
  frame_selection: { changes: "Only frames that change", even: "All, evenly spaced" },
};
// Where the page asks for more than the API's default: the API makes no reel unless asked (older clients
// have no use for one), and people on the page want to watch what was found.
const PAGE_DEFAULTS = { reel: true };

const form = byId("analysis-form");
const typeSelect = byId("analysis-type");
const typeHint = byId("type-hint");
const unavailable = byId("parameters-error");

let fieldsByType = null;    // {highlights: {name: JSON schema}, workout: …} once read from the server
const edited = new Set();   // fields the user changed: switching the type keeps their values

function parameterInputs() {
  return form.querySelectorAll(".params [name], .advanced [name]");
}

// "Advanced" fields stay empty, which the server reads as its default; the others show the default.
function showsDefault(input) {
  return !input.closest(".advanced");
}

function setAttribute(input, name, value) {
  if (value === undefined || value === null) input.removeAttribute(name);
  else input.setAttribute(name, String(value));
}

// An optional text field is `anyOf: [{type: string, …}, {type: null}]`; its limits sit on the string.
function textSchema(schema) {
  return (schema.anyOf || []).find((option) => option.type === "string") || schema;
}

function choiceText(name, value) {
  return (CHOICE_WORDS[name] || {})[value] || String(value);
}

/* A choice (`enum`): its options are the document's, in its order; it shows the default unless the user chose. */
function applyChoices(select, schema) {
  const values = schema.enum.map(String);
  const hasDefault = schema.default !== undefined && schema.default !== null;
  // Without a default to show, the first option is the server's default (an empty value is not sent).
  const wanted = (showsDefault(select) && hasDefault ? [] : [""]).concat(values);
  const chosen = select.value;
  // Rebuilt only when the choices differ, so a type switch leaves an unchanged list (and its focus) alone.
  if (Array.from(select.options, (option) => option.value).join("\n") !== wanted.join("\n")) {
    select.replaceChildren(...wanted.map((value) => {
      const option = make("option", null, value === "" ? "Server default" : choiceText(select.name, value));
      option.value = value;
      return option;
    }));
  }
  const keep = edited.has(select.name) && wanted.includes(chosen);
  select.value = keep ? chosen : (showsDefault(select) && hasDefault ? String(schema.default) : "");
  select.required = showsDefault(select);
}

function isCheckbox(input) {
  return input.type === "checkbox";
}

/* A checkbox's state when the user has not changed it: the page's own default, else the document's. */
function defaultChecked(input, schema) {
  if (input.name in PAGE_DEFAULTS) return PAGE_DEFAULTS[input.name];
  return schema ? schema.default === true : input.defaultChecked;
}

function applySchema(input, schema) {
  if (isCheckbox(input)) {
    if (!edited.has(input.name)) input.checked = defaultChecked(input, schema);
    return;
  }
  if (input.tagName === "SELECT") {
    if (Array.isArray(schema.enum)) applyChoices(input, schema);
    return;
  }
  const numeric = schema.type === "integer" || schema.type === "number";
  setAttribute(input, "min", numeric ? schema.minimum : null);
  setAttribute(input, "max", numeric ? schema.maximum : null);
  setAttribute(input, "step", numeric ? (schema.type === "integer" ? "1" : "any") : null);
  setAttribute(input, "inputmode", numeric ? (schema.type === "integer" ? "numeric" : "decimal") : null);
  setAttribute(input, "maxlength", numeric ? null : textSchema(schema).maxLength);
  const hint = byId(input.getAttribute("aria-describedby"));
  const limits = hint && hint.querySelector(".limits");
  // The hint's own words go on after the limits: ". " unless the page says otherwise (data-after).
  if (limits) limits.textContent = numeric ? schema.minimum + "–" + schema.maximum + (limits.dataset.after || ". ") : "";
  input.required = showsDefault(input);
  if (showsDefault(input) && !edited.has(input.name)) {
    input.value = schema.default === undefined || schema.default === null ? "" : String(schema.default);
  }
}

/* Shows the chosen type's fields with its defaults (in fields the user has not changed) and limits. */
function applyType() {
  const type = typeSelect.value;
  typeHint.textContent = TYPE_HINTS[type] || "";
  if (!fieldsByType) return;  // nothing known: every field stays, empty, for the server to judge
  for (const input of parameterInputs()) {
    const schema = (fieldsByType[type] || {})[input.name];
    input.closest(".field").hidden = !schema;
    input.disabled = !schema;
    if (schema) applySchema(input, schema);
  }
}

function resetSettings() {
  for (const input of parameterInputs()) {
    if (isCheckbox(input)) input.checked = defaultChecked(input, null);
    else input.value = "";
  }
  edited.clear();
  applyType();
}

function fieldsFrom(document) {
  const schemas = document && document.components && document.components.schemas;
  const fields = {};
  for (const [type, name] of Object.entries(SCHEMA_NAMES)) {
    const properties = schemas && schemas[name] && schemas[name].properties;
    if (!properties || typeof properties !== "object") return null;
    fields[type] = properties;
  }
  return fields;
}

/* Reads the defaults and limits from the server, then fills the form. */
export async function loadParameters() {
  let reason = "it did not describe the analyses' parameters";
  try {
    const answer = await openapiDocument();
    if (answer.ok) fieldsByType = fieldsFrom(answer.body);
    else reason = "HTTP " + answer.status;
  } catch (e) {
    reason = "the server could not be reached";
  }
  if (!fieldsByType) {
    for (const input of parameterInputs()) {
      if (input.tagName !== "SELECT" && !isCheckbox(input) && !input.placeholder) input.placeholder = "server default";
    }
    unavailable.textContent = "The page could not read the settings' defaults and limits from the server (" + reason
      + "), so the fields are empty: an empty field uses the server's default. Reload the page to try again.";
    unavailable.hidden = false;
  }
  form.setAttribute("data-parameters", fieldsByType ? "ready" : "unavailable");
  applyType();
}

export function bindParameters() {
  typeSelect.addEventListener("change", applyType);
  for (const input of parameterInputs()) {
    // A choice made by script or some browsers' pickers fires only "change".
    for (const type of ["input", "change"]) input.addEventListener(type, () => edited.add(input.name));
  }
  byId("reset-settings").addEventListener("click", resetSettings);
  applyType();
}

export function analysisType() {
  return typeSelect.value;
}

/* The upload's form: the type, every setting the user did not leave empty, and the video. */
export function analysisForm(video) {
  const data = new FormData();
  data.append("analysis_type", typeSelect.value);
  for (const input of parameterInputs()) {
    if (input.disabled || !input.name) continue;
    if (isCheckbox(input)) {
      data.append(input.name, input.checked ? "true" : "false");
      continue;
    }
    const value = input.tagName === "TEXTAREA" ? input.value : input.value.trim();
    if (value.trim() === "") continue;  // empty means "the server's default"
    data.append(input.name, value);
  }
  data.append("video", video, video.name);
  return data;
}
