"""An upload's analysis parameters as HTTP sends them: plain form fields and a `params` JSON object.

What the parameters are (the kinds, their defaults and limits, the prompt
rules) is engine/parameters.py's pydantic models; this module only reads them
from a form: text to numbers (ASCII digits only), the `params` object,
duplicate and unknown fields, and pydantic's errors as the 400 problem that
names the field in a sentence.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Callable, Dict, Optional, Tuple, Type

from pydantic import ValidationError

from video_analysis.engine.parameters import REEL_PARAMETERS, AnalysisKind, AnalysisParameters
from video_analysis.engine.prompts import prompts_problem
from video_analysis.web.errors import ApiError




def _own_parameters_first() -> Tuple[str, ...]:
    """Every parameter some analysis takes: each kind's own first, then the shared ones, then the reel's.

    The order of the contract's table, in which a form is checked: of several bad fields, the first is named.
    """
    shared = [name for name in AnalysisParameters.model_fields if name not in REEL_PARAMETERS]
    own = [name for kind in AnalysisKind for name in kind.parameters.model_fields
           if name not in shared and name not in REEL_PARAMETERS]
    return tuple(dict.fromkeys(own + shared + list(REEL_PARAMETERS)))


PARAMETER_NAMES = _own_parameters_first()
# Each parameter's JSON schema (type, limits), from the first analysis that takes it, in PARAMETER_NAMES' order;
# the OpenAPI document's form fields are made from these too.
PARAMETER_SCHEMAS: Dict[str, dict] = {
    name: next(kind.parameters.model_json_schema()["properties"][name] for kind in AnalysisKind
               if name in kind.parameters.model_fields)
    for name in PARAMETER_NAMES
}
# ASCII digits only: `\d` alone would also take "７" or "٧", which int() reads. At most 12 digits: a
# 5000-digit number is refused as text, never converted.
_INTEGER_TEXT = re.compile(r"^[+-]?\d{1,12}$", re.ASCII)
_NUMBER_TEXT = re.compile(r"^[+-]?(\d{1,12}(\.\d{0,9})?|\.\d{1,9})$", re.ASCII)
_BOOLEAN_TEXT = {"true": True, "false": False, "1": True, "0": False}


def _bad(field: str, sentence: str) -> ApiError:
    return ApiError(400, sentence, "Invalid parameter", field=field)


def _limits(name: str) -> str:
    schema = PARAMETER_SCHEMAS[name]
    return f"between {schema['minimum']:g} and {schema['maximum']:g}"


def _one_of(choices) -> str:
    return " or ".join(repr(choice) for choice in choices)


def _from_http(name: str, value: Any) -> Any:
    """A value as a form or JSON sent it, made the type its model checks (strictly) against its limits."""
    kind = PARAMETER_SCHEMAS[name].get("type")
    choices = PARAMETER_SCHEMAS[name].get("enum")
    if choices is not None:  # one of a few words
        if not isinstance(value, str) or value.strip() not in choices:
            shown = value[:40] if isinstance(value, str) else json.dumps(value)[:40]
            raise _bad(name, f"'{name}' must be {_one_of(choices)}; got {shown!r}.")
        return value.strip()
    if kind == "boolean":  # a form sends text, `params` JSON's true/false
        text = value.strip().lower() if isinstance(value, str) else value
        if isinstance(value, bool) or text in _BOOLEAN_TEXT:
            return value if isinstance(value, bool) else _BOOLEAN_TEXT[text]
        shown = repr(value[:40]) if isinstance(value, str) else json.dumps(value)[:40]  # 1 in JSON, '1' in a form
        raise _bad(name, f"'{name}' must be true or false; got {shown}.")
    if kind not in ("integer", "number"):  # a prompt
        if not isinstance(value, str):
            raise _bad(name, f"'{name}' must be text.")
        return value
    if isinstance(value, bool) or value is None:
        raise _bad(name, f"'{name}' must be a number, not {json.dumps(value)}.")
    if isinstance(value, str):
        text = value.strip()
        if not (_INTEGER_TEXT if kind == "integer" else _NUMBER_TEXT).match(text):
            what = "a whole number" if kind == "integer" else "a number"
            raise _bad(name, f"'{name}' must be {what} {_limits(name)}; got {text[:40]!r}.")
        return int(text) if kind == "integer" else float(text)
    if kind == "integer" and isinstance(value, float) and value.is_integer():
        return int(value)  # JSON's 7.0 is the number 7
    return value


def _sentence(name: str, error: dict) -> str:
    """pydantic's error about parameter `name`, as a sentence a person can act on."""
    value, context = error["input"], error.get("ctx") or {}
    if error["type"] == "value_error":  # the model's own validators wrote the sentence (prompts)
        return str(context["error"])
    if isinstance(value, float) and not math.isfinite(value):
        return f"'{name}' must be a finite number."
    if isinstance(value, (int, float)) and not isinstance(value, bool) and (
            error["type"] in ("greater_than_equal", "less_than_equal") or isinstance(value, int)):
        shown = str(value) if abs(value) < 1e12 else "a huge number"
        return f"'{name}' must be {_limits(name)}; got {shown}."
    if isinstance(value, float):
        return f"'{name}' must be a whole number, not a fraction ({value:g})."
    return f"'{name}' must be a number."


def _validated(model: Type[AnalysisParameters], values: Dict[str, Any]) -> AnalysisParameters:
    try:
        return model.model_validate(values)
    except ValidationError as error:
        first = error.errors()[0]
        name = str(first["loc"][0])
        raise _bad(name, _sentence(name, first)) from None


def _reject_constant(name: str) -> None:
    raise ValueError(name)


def _params_object(text: str) -> Dict[str, Any]:
    try:
        parsed = json.loads(text, parse_constant=_reject_constant)  # NaN and Infinity are not JSON
    except (ValueError, RecursionError):
        raise _bad("params", "'params' is not valid JSON; send an object such as {\"min_significance\": 7}.") from None
    if not isinstance(parsed, dict):
        raise _bad("params", "'params' must be a JSON object such as {\"min_significance\": 7}.")
    return parsed


def _analysis_kind(text: Optional[str]) -> AnalysisKind:
    text = (text or AnalysisKind.HIGHLIGHTS.value).strip()
    try:
        return AnalysisKind(text)
    except ValueError:
        raise _bad("analysis_type", f"Unknown analysis_type {text[:40]!r}; use "
                                    f"{_one_of(kind.value for kind in AnalysisKind)}.") from None


def parse_analysis_request(form, kind: Optional[AnalysisKind] = None,
                           reel: bool = True) -> Tuple[AnalysisKind, AnalysisParameters]:
    """The analysis kind and its validated parameters from a multipart form (werkzeug's MultiDict).

    `kind` fixes the kind (legacy routes); otherwise the form's `analysis_type`
    chooses it. Empty values count as not given; a plain field wins over the
    same key in `params`; unknown fields are refused. A parameter of another
    kind is accepted (frontends send every field) but checked, and not used.
    `reel=False` (the legacy routes, which make no reel): the reel's parameters are unknown fields.
    """
    names = [name for name in PARAMETER_NAMES if reel or name not in REEL_PARAMETERS]
    accepted = set(names) | {"params", "analysis_type"}
    for key in form.keys():
        if key not in accepted:
            raise _bad(key[:64], f"Unknown field '{key[:64]}'; accepted fields are: {', '.join(sorted(accepted))}.")
        if len(form.getlist(key)) > 1:
            raise _bad(key, f"The field '{key}' was sent more than once; send it once.")
    if kind is None:
        kind = _analysis_kind(form.get("analysis_type"))

    given: Dict[str, Any] = {}
    if form.get("params", "").strip():
        for key, value in _params_object(form["params"]).items():
            if key not in names:
                raise _bad(str(key)[:64], f"Unknown parameter '{str(key)[:64]}' in 'params'; "
                                          f"accepted parameters are: {', '.join(names)}.")
            given[key] = value
    for name in names:
        if name in form and form[name].strip() != "":
            given[name] = form[name]

    model = kind.parameters
    values: Dict[str, Any] = {}
    for name in PARAMETER_NAMES:  # one at a time, in order: the first bad field is the one named
        if name not in given:
            continue
        if name in model.model_fields:
            if given[name] != "":  # empty: the default
                values[name] = _from_http(name, given[name])
                _validated(model, {name: values[name]})
        else:  # another kind's parameter: checked, even when empty, and not used
            owner = next(other.parameters for other in AnalysisKind if name in other.parameters.model_fields)
            _validated(owner, {name: _from_http(name, given[name])})
    return kind, _validated(model, values)


def check_prompts_fit(prompt_problem: Callable[..., Optional[Tuple[str, str]]], kind: AnalysisKind,
                      parameters: AnalysisParameters) -> None:
    """400 naming a field when the prompts, frames and max_tokens do not fit the loaded model's context.

    `prompt_problem` is the model runner's (`ModelRunner.prompt_problem`): it counts tokens with the
    loaded tokenizer; prompts not given are counted as the analysis kind's defaults.
    """
    problem = prompts_problem(prompt_problem, kind, parameters)
    if problem is not None:
        field, sentence = problem
        raise _bad(field, sentence)
