"""Parsing an upload's analysis parameters: form text and `params` JSON, through the pydantic models.

Unit tests: a werkzeug MultiDict stands for the form; no app, no model.
"""
import json

import pytest
from pydantic import ValidationError
from werkzeug.datastructures import MultiDict

from video_analysis.engine.parameters import (MAX_PROMPT_BYTES, AnalysisKind, HighlightsParameters,
                                              WorkoutParameters)
from video_analysis.web.errors import ApiError
from video_analysis.web.parameters import PARAMETER_NAMES, parse_analysis_request


def parse(kind=None, **fields):
    return parse_analysis_request(MultiDict(fields), kind)


def refusal(kind=None, **fields) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(kind, **fields)
    assert caught.value.status == 400 and caught.value.title == "Invalid parameter"
    assert caught.value.detail.endswith(".") and len(caught.value.detail) < 600
    return caught.value


# -- kinds and defaults -----------------------------------------------------------------------
def test_an_empty_form_is_a_highlights_analysis_with_its_defaults():
    kind, parameters = parse()
    assert kind is AnalysisKind.HIGHLIGHTS
    assert parameters.model_dump() == {"segment_duration": 10, "frames_per_segment": 8, "max_tokens": 64,
                                       "system_prompt": None, "user_prompt": None, "segmentation": "fixed",
                                       "frame_selection": "changes", "reel": False, "min_significance": 6,
                                       "max_highlights": 10}


def test_a_workout_has_its_own_defaults_and_no_highlight_parameters():
    kind, parameters = parse(analysis_type="workout")
    assert kind is AnalysisKind.WORKOUT and isinstance(parameters, WorkoutParameters)
    assert parameters.model_dump() == {"segment_duration": 15, "frames_per_segment": 8, "max_tokens": 64,
                                       "system_prompt": None, "user_prompt": None, "segmentation": "fixed",
                                       "frame_selection": "changes", "reel": False, "reel_seconds_per_step": 5}


def test_a_fixed_kind_wins_over_the_forms_analysis_type():
    kind, parameters = parse(AnalysisKind.WORKOUT, analysis_type="highlights")
    assert kind is AnalysisKind.WORKOUT and isinstance(parameters, WorkoutParameters)


@pytest.mark.parametrize("text", ["poetry", "Highlights", "x" * 10000])
def test_an_unknown_analysis_type_is_refused(text):
    error = refusal(analysis_type=text)
    assert error.extra["field"] == "analysis_type" and "'highlights' or 'workout'" in error.detail


def test_the_kind_reads_as_its_value():
    assert f"the {AnalysisKind.WORKOUT} analysis" == "the workout analysis"
    assert AnalysisKind.WORKOUT == "workout" and AnalysisKind("highlights").parameters is HighlightsParameters


# -- form text ---------------------------------------------------------------------------------
def test_form_text_becomes_numbers():
    _, parameters = parse(min_significance=" 7 ", max_highlights="+3", segment_duration="2.5", max_tokens="12")
    assert (parameters.min_significance, parameters.max_highlights) == (7, 3)
    assert parameters.segment_duration == 2.5 and parameters.max_tokens == 12
    assert type(parameters.min_significance) is int and type(parameters.segment_duration) is float


def test_empty_fields_count_as_not_given():
    _, parameters = parse(min_significance="", segment_duration="  ", params=json.dumps({"max_highlights": ""}))
    assert (parameters.min_significance, parameters.segment_duration, parameters.max_highlights) == (6, 10, 10)


@pytest.mark.parametrize("field,text,sentence", [
    ("min_significance", "7.0", "'min_significance' must be a whole number between 1 and 10; got '7.0'."),
    ("min_significance", "seven", "'min_significance' must be a whole number between 1 and 10; got 'seven'."),
    ("max_highlights", "0x10", "'max_highlights' must be a whole number between 1 and 100; got '0x10'."),
    ("max_highlights", "\uff17", "'max_highlights' must be a whole number between 1 and 100; got '\uff17'."),
    ("segment_duration", "NaN", "'segment_duration' must be a number between 1 and 600; got 'NaN'."),
    ("segment_duration", "1e3", "'segment_duration' must be a number between 1 and 600; got '1e3'."),
    ("segment_duration", "9" * 5000, "'segment_duration' must be a number between 1 and 600; got '" + "9" * 40 + "'."),
    ("min_significance", "11", "'min_significance' must be between 1 and 10; got 11."),
    ("max_tokens", "-5", "'max_tokens' must be between 1 and 1024; got -5."),
    ("segment_duration", "600.5", "'segment_duration' must be between 1 and 600; got 600.5."),
])
def test_form_text_that_is_not_an_allowed_number_is_refused_in_a_sentence(field, text, sentence):
    error = refusal(**{field: text})
    assert (error.extra["field"], error.detail) == (field, sentence)


@pytest.mark.parametrize("kind", list(AnalysisKind))
def test_every_limit_of_every_numeric_parameter_is_enforced(kind):
    for name, schema in kind.parameters.model_json_schema()["properties"].items():
        if schema.get("type") not in ("integer", "number"):
            continue
        step = 1 if schema["type"] == "integer" else 0.25
        for inside in (schema["minimum"], schema["maximum"]):
            assert getattr(parse(kind, **{name: str(inside)})[1], name) == inside
        for outside in (schema["minimum"] - step, schema["maximum"] + step):
            assert refusal(kind, **{name: str(outside)}).extra["field"] == name


# -- the params JSON object ------------------------------------------------------------------------
def test_params_json_gives_values_and_a_plain_field_wins():
    _, parameters = parse(params=json.dumps({"min_significance": 7, "max_highlights": 4}), max_highlights="5")
    assert (parameters.min_significance, parameters.max_highlights) == (7, 5)


def test_json_numbers_and_number_text_are_both_accepted():
    _, parameters = parse(params=json.dumps({"min_significance": 7.0, "max_highlights": "4", "segment_duration": 3}))
    assert (parameters.min_significance, parameters.max_highlights, parameters.segment_duration) == (7, 4, 3)
    assert type(parameters.min_significance) is int


@pytest.mark.parametrize("params,field,sentence", [
    ('{"min_significance": 7.5}', "min_significance",
     "'min_significance' must be a whole number, not a fraction (7.5)."),
    ('{"min_significance": true}', "min_significance", "'min_significance' must be a number, not true."),
    ('{"min_significance": null}', "min_significance", "'min_significance' must be a number, not null."),
    ('{"max_highlights": [3]}', "max_highlights", "'max_highlights' must be a number."),
    ('{"segment_duration": 1e400}', "segment_duration", "'segment_duration' must be a finite number."),
    ('{"min_significance": 1e400}', "min_significance", "'min_significance' must be a finite number."),
    (json.dumps({"min_significance": 10 ** 400}), "min_significance",
     "'min_significance' must be between 1 and 10; got a huge number."),
    (json.dumps({"segment_duration": 10 ** 400}), "segment_duration",
     "'segment_duration' must be between 1 and 600; got a huge number."),
    ('{"system_prompt": 42}', "system_prompt", "'system_prompt' must be text."),
    ('{"user_prompt": null}', "user_prompt", "'user_prompt' must be text."),
    ('{"segment_duration": NaN}', "params", None),
    ('{"segment_duration": Infinity}', "params", None),
    ("{not json", "params", None),
    ("[1, 2]", "params", "'params' must be a JSON object such as {\"min_significance\": 7}."),
    ("null", "params", None),
    ("[" * 100000, "params", None),
])
def test_bad_params_are_refused_naming_the_field(params, field, sentence):
    error = refusal(params=params)
    assert error.extra["field"] == field
    assert sentence is None or error.detail == sentence


@pytest.mark.parametrize("fields,field,sentence", [
    ({"frame_selection": "all"}, "frame_selection", "'frame_selection' must be 'changes' or 'even'; got 'all'."),
    ({"segmentation": "Scenes"}, "segmentation", "'segmentation' must be 'fixed' or 'scenes'; got 'Scenes'."),
    ({"params": json.dumps({"segmentation": 1})}, "segmentation", "'segmentation' must be 'fixed' or 'scenes'; got '1'."),
    ({"params": json.dumps({"frame_selection": None})}, "frame_selection",
     "'frame_selection' must be 'changes' or 'even'; got 'null'."),
])
def test_a_choice_outside_its_words_is_refused_naming_them(fields, field, sentence):
    error = refusal(**fields)
    assert (error.extra["field"], error.detail) == (field, sentence)


def test_the_sampling_choices_are_taken_from_a_form_and_from_params():
    _, parameters = parse(frame_selection=" even ", params=json.dumps({"segmentation": "scenes"}))
    assert (parameters.frame_selection, parameters.segmentation) == ("even", "scenes")


# -- unknown and duplicate fields --------------------------------------------------------------------
def test_an_unknown_field_is_refused_and_the_accepted_ones_listed():
    error = refusal(favourite_colour="blue")
    assert error.extra["field"] == "favourite_colour"
    for name in PARAMETER_NAMES + ("params", "analysis_type"):
        assert name in error.detail


def test_an_unknown_field_name_is_cut_to_64_characters():
    assert refusal(**{"x" * 5000: "1"}).extra["field"] == "x" * 64


def test_an_unknown_parameter_in_params_is_refused():
    error = refusal(params=json.dumps({"colour": 1}))
    assert error.extra["field"] == "colour" and "in 'params'" in error.detail


def test_a_field_sent_twice_is_refused():
    with pytest.raises(ApiError) as caught:
        parse_analysis_request(MultiDict([("min_significance", "3"), ("min_significance", "4")]))
    assert caught.value.extra["field"] == "min_significance" and "more than once" in caught.value.detail


def test_another_kinds_parameter_is_accepted_checked_and_not_used():
    _, parameters = parse(AnalysisKind.WORKOUT, min_significance="5", max_highlights="3")
    assert "min_significance" not in parameters.model_dump()
    assert refusal(AnalysisKind.WORKOUT, min_significance="99").extra["field"] == "min_significance"


def test_another_kinds_parameter_left_empty_in_params_is_refused_as_before():
    """An empty plain field is "not given"; an empty value in `params` for a parameter the kind does not use
    has always been checked like any other value, and refused."""
    error = refusal(analysis_type="workout", params=json.dumps({"min_significance": ""}))
    assert error.extra["field"] == "min_significance" and "got ''" in error.detail
    assert parse(params=json.dumps({"min_significance": ""}))[1].min_significance == 6  # its own kind: default


@pytest.mark.parametrize("fields, named", [
    ({"segment_duration": "x", "min_significance": "x"}, "min_significance"),
    ({"max_tokens": "x", "min_significance": "0"}, "min_significance"),
    ({"frames_per_segment": "0", "max_highlights": "0"}, "max_highlights"),
    ({"params": json.dumps({"max_tokens": 0, "min_significance": 0})}, "min_significance"),
    ({"min_significance": "0", "system_prompt": "<image>"}, "min_significance"),
    ({"user_prompt": "\x00", "system_prompt": "<image>"}, "system_prompt"),
])
def test_of_several_bad_fields_the_first_in_the_contracts_order_is_named(fields, named):
    """The order of the contract's table (each kind's own parameters, then the shared ones), whatever the
    order pydantic keeps its fields in."""
    assert refusal(**fields).extra["field"] == named


def test_the_accepted_parameters_are_listed_in_the_contracts_order():
    assert PARAMETER_NAMES == ("min_significance", "max_highlights", "segment_duration", "frames_per_segment",
                               "max_tokens", "system_prompt", "user_prompt", "segmentation", "frame_selection",
                               "reel", "reel_seconds_per_step")
    assert ", ".join(PARAMETER_NAMES) in refusal(params=json.dumps({"colour": 1})).detail


# -- prompts ------------------------------------------------------------------------------------------
def test_a_prompt_of_exactly_the_byte_limit_is_accepted_one_byte_more_is_not():
    assert parse(user_prompt="x" * MAX_PROMPT_BYTES)[1].user_prompt == "x" * MAX_PROMPT_BYTES
    error = refusal(user_prompt="x" * (MAX_PROMPT_BYTES + 1))
    assert (error.extra["field"], error.detail) == ("user_prompt", "'user_prompt' is too long: at most 8 KiB of text "
                                                                   "is allowed.")


def test_the_limit_counts_bytes_not_characters():
    assert refusal(system_prompt="\u20ac" * 3000).extra["field"] == "system_prompt"  # 3000 characters, 9000 bytes


@pytest.mark.parametrize("prompt,words", [
    ("look\x00here", "NUL"),
    ("describe <image> here", "control token <image>"),
    ("<End_Of_Utterance>", "control token <End_Of_Utterance>"),
    ("<row_1_col_2>", "control token"),
])
def test_prompts_that_would_break_the_model_are_refused(prompt, words):
    error = refusal(user_prompt=prompt)
    assert error.extra["field"] == "user_prompt" and words in error.detail


def test_a_lone_surrogate_from_json_is_refused():
    error = refusal(params='{"system_prompt": "a\\ud800b"}')
    assert error.extra["field"] == "system_prompt" and "surrogate" in error.detail


def test_ordinary_prompts_are_kept_as_given():
    _, parameters = parse(system_prompt="Be brief.", params=json.dumps({"user_prompt": "Was ist los? \u00e9\u4e2d"}))
    assert (parameters.system_prompt, parameters.user_prompt) == ("Be brief.", "Was ist los? \u00e9\u4e2d")


# -- the models themselves ---------------------------------------------------------------------------
@pytest.mark.parametrize("values", [{"min_significance": True}, {"min_significance": "7"}, {"colour": 1},
                                    {"segment_duration": float("nan")}])
def test_the_models_are_strict_and_closed(values):
    with pytest.raises(ValidationError):
        HighlightsParameters(**values)


def test_parameters_do_not_change_once_made():
    parameters = HighlightsParameters()
    with pytest.raises(ValidationError):
        parameters.min_significance = 3
