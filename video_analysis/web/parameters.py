"""Validating analysis parameters from a form: plain fields and a `params` JSON object.

The contract's limits live here, once; the upload route, the legacy routes,
the OpenAPI document and the web page's limits all read `PARAMETERS`.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

from video_analysis.web.errors import ApiError
from video_analysis.engine.prompts import DEFAULT_PROMPTS
from video_analysis.engine.parameters import DEFAULT_MAX_TOKENS

ANALYSIS_TYPES = ("highlights", "workout")
MAX_PROMPT_BYTES = 8 * 1024
# ASCII digits only: `\d` alone would also take "７" or "٧", which int() reads.
_INTEGER_TEXT = re.compile(r"^[+-]?\d{1,12}$", re.ASCII)
# SmolVLM's control tokens: in a prompt they would break the image/text layout the model expects.
_SPECIAL_TOKEN = re.compile(r"<(?:image|video|global-img|fake_token_around_image|end_of_utterance|row_\d+_col_\d+"
                            r"|\|im_(?:start|end)\||\|endoftext\|)>", re.IGNORECASE)
_NUMBER_TEXT = re.compile(r"^[+-]?(\d{1,12}(\.\d{0,9})?|\.\d{1,9})$", re.ASCII)


@dataclass(frozen=True)
class Parameter:
    name: str
    kind: str  # "integer", "number" or "string"
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    max_bytes: Optional[int] = None
    # Default per analysis type; a type missing here does not use the parameter.
    defaults: Tuple[Tuple[str, Any], ...] = ()

    def default_for(self, analysis_type: str) -> Any:
        return dict(self.defaults).get(analysis_type)

    def applies_to(self, analysis_type: str) -> bool:
        return analysis_type in dict(self.defaults)


PARAMETERS: Dict[str, Parameter] = {p.name: p for p in (
    Parameter("min_significance", "integer", 1, 10, defaults=(("highlights", 6),)),
    Parameter("max_highlights", "integer", 1, 100, defaults=(("highlights", 10),)),
    Parameter("segment_duration", "number", 1, 600, defaults=(("highlights", 10), ("workout", 15))),
    Parameter("frames_per_segment", "integer", 1, 64, defaults=(("highlights", 8), ("workout", 8))),
    Parameter("max_tokens", "integer", 1, 1024,
              defaults=(("highlights", DEFAULT_MAX_TOKENS), ("workout", DEFAULT_MAX_TOKENS))),
    Parameter("system_prompt", "string", max_bytes=MAX_PROMPT_BYTES, defaults=(("highlights", None), ("workout", None))),
    Parameter("user_prompt", "string", max_bytes=MAX_PROMPT_BYTES, defaults=(("highlights", None), ("workout", None))),
)}


def _bad(field: str, sentence: str) -> ApiError:
    return ApiError(400, sentence, "Invalid parameter", field=field)


def _coerce(spec: Parameter, value: Any) -> Any:
    """One parameter's value, from JSON or from form text, checked against its limits."""
    name = spec.name
    if spec.kind == "string":
        if not isinstance(value, str):
            raise _bad(name, f"'{name}' must be text.")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate ("\ud800") that JSON let through
            raise _bad(name, f"'{name}' must be valid Unicode text; it holds an unpaired surrogate "
                             "(\\ud800-\\udfff) escape.") from None
        if len(value.encode("utf-8", "surrogatepass")) > spec.max_bytes:
            raise _bad(name, f"'{name}' is too long: at most {spec.max_bytes // 1024} KiB of text is allowed.")
        if "\x00" in value:
            raise _bad(name, f"'{name}' must not contain NUL characters.")
        token = _SPECIAL_TOKEN.search(value)
        if token:
            raise _bad(name, f"'{name}' must not contain the model's control token {token.group(0)}; "
                             "describe the frames in plain words instead.")
        return value
    if isinstance(value, bool) or value is None:
        raise _bad(name, f"'{name}' must be a number, not {json.dumps(value)}.")
    if isinstance(value, str):
        text = value.strip()
        pattern = _INTEGER_TEXT if spec.kind == "integer" else _NUMBER_TEXT
        if not pattern.match(text):
            what = "a whole number" if spec.kind == "integer" else "a number"
            raise _bad(name, f"'{name}' must be {what} between {spec.minimum:g} and {spec.maximum:g}; got {text[:40]!r}.")
        value = int(text) if spec.kind == "integer" else float(text)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(name, f"'{name}' must be a finite number.")
        if spec.kind == "integer":
            if not value.is_integer():
                raise _bad(name, f"'{name}' must be a whole number, not a fraction ({value:g}).")
            value = int(value)
    if not isinstance(value, (int, float)):
        raise _bad(name, f"'{name}' must be a number.")
    if not spec.minimum <= value <= spec.maximum:
        shown = str(value) if abs(value) < 1e12 else "a huge number"
        raise _bad(name, f"'{name}' must be between {spec.minimum:g} and {spec.maximum:g}; got {shown}.")
    return value


def _reject_constant(name: str) -> None:
    raise ValueError(name)


def _params_object(text: str) -> Dict[str, Any]:
    try:
        parsed = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise _bad("params", "'params' is not valid JSON; send an object such as {\"min_significance\": 7}.") from None
    if not isinstance(parsed, dict):
        raise _bad("params", "'params' must be a JSON object such as {\"min_significance\": 7}.")
    return parsed


def parse_analysis_request(
    form, analysis_type: Optional[str] = None, allowed_extra: Iterable[str] = (),
) -> Tuple[str, Dict[str, Any]]:
    """The analysis type and the engine keyword arguments from a multipart form.

    `form` is werkzeug's MultiDict. `analysis_type` fixes the type (legacy
    routes); otherwise the form's `analysis_type` field chooses it. Empty
    fields count as not given; a plain field wins over the same key in
    `params`; unknown fields are refused.
    """
    known = set(PARAMETERS) | {"params", "analysis_type"} | set(allowed_extra)
    for key in form.keys():
        if key not in known:
            raise _bad(key[:64], f"Unknown field '{key[:64]}'; accepted fields are: {', '.join(sorted(known))}.")
        if len(form.getlist(key)) > 1:
            raise _bad(key, f"The field '{key}' was sent more than once; send it once.")

    if analysis_type is None:
        analysis_type = (form.get("analysis_type") or "highlights").strip()
        if analysis_type not in ANALYSIS_TYPES:
            raise _bad("analysis_type", f"Unknown analysis_type {analysis_type[:40]!r}; use 'highlights' or 'workout'.")

    given: Dict[str, Any] = {}
    if form.get("params", "").strip():
        for key, value in _params_object(form["params"]).items():
            if key not in PARAMETERS:
                raise _bad(str(key)[:64], f"Unknown parameter '{str(key)[:64]}' in 'params'; "
                                          f"accepted parameters are: {', '.join(PARAMETERS)}.")
            given[key] = value
    for key in PARAMETERS:
        if key in form and form[key].strip() != "":
            given[key] = form[key]

    values = {}
    for name, spec in PARAMETERS.items():
        if not spec.applies_to(analysis_type):
            # Accepted (frontends send every field) but checked and not used.
            if name in given:
                _coerce(spec, given[name])
            continue
        value = _coerce(spec, given[name]) if name in given and given[name] != "" else spec.default_for(analysis_type)
        values[name] = value
    return analysis_type, values


def check_prompts_fit(prompt_problem: Callable[..., Optional[Tuple[str, str]]], analysis_type: str,
                      values: Dict[str, Any]) -> None:
    """400 naming a field when the prompts, frames and max_tokens do not fit the loaded model's context.

    `prompt_problem` is the model runner's (`ModelRunner.prompt_problem`): it counts tokens with the
    loaded tokenizer; prompts not given are counted as the analysis type's defaults.
    """
    default_system, default_user = DEFAULT_PROMPTS[analysis_type]
    problem = prompt_problem(values.get("system_prompt"), values.get("user_prompt"), values["frames_per_segment"],
                             values["max_tokens"], default_system_prompt=default_system,
                             default_user_prompt=default_user)
    if problem is not None:
        field, sentence = problem
        raise _bad(field, sentence)
