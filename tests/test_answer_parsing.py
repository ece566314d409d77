"""Scores and exercise names read from model-style free text."""
import pytest
from hypothesis import given, strategies as st

from video_analysis.engine.answers import normalize_exercise, parse_significance


@pytest.mark.parametrize("answer,score", [
    ("Significance: 8/10", 8),
    ("8/10", 8),
    ("Score: 8", 8),
    ("significance 8 out of 10", 8),
    ("**8**/10", 8),
    ("A dog jumps into a pool.\nSignificance: 9/10", 9),
    ("Rating - 3", 3),
    ("I'd rate this a 7 / 10 because the goal is scored.", 7),
    ("Significance score: 10", 10),
    ("eight out of ten", 8),
    ("7.5/10", 8),
    ("0/10", 1),
    ("5", 5),
    ("**Significance:** 6", 6),
    ("The significance is 4.", 4),
    ("Segment 3: a car drives by. Score: 2/10", 2),
])
def test_scores_in_many_phrasings(answer, score):
    assert parse_significance(answer) == score


@pytest.mark.parametrize("answer", [
    None, "", "A person walks across the room.", "15/10 amazing", "Significance: high", "<end_of_utterance>",
    "We saw 3 people and 12 cars.",
])
def test_answers_without_a_readable_score_give_none(answer):
    assert parse_significance(answer) is None


@given(st.text())
def test_any_text_gives_none_or_a_score_on_the_scale(text):
    score = parse_significance(text)
    assert score is None or (isinstance(score, int) and 1 <= score <= 10)


@given(st.integers(1, 10), st.sampled_from(["{n}/10", "Score: {n}", "Significance: {n}/10", "**{n}**/10",
                                              "significance {n} out of 10", "I rate it {n}/10."]),
       st.text(alphabet=st.characters(blacklist_characters="0123456789/"), max_size=40))
def test_a_stated_score_survives_surrounding_prose(n, template, prose):
    assert parse_significance(prose.replace("\n", " ") + "\n" + template.format(n=n)) == n


@pytest.mark.parametrize("answer,name", [
    ("Exercise: squat", "squat"),
    ("Exercise: Squats", "squat"),
    ("Exercise: push-up", "push-up"),
    ("Exercise: Push-ups. The person lowers their chest.", "push-up"),
    ("exercise: pushup", "push-up"),
    ("Exercise: push ups", "push-up"),
    ("**Exercise:** Lunges", "lunge"),
    ("Exercise: rest", "rest"),
    ("Exercise: none", "rest"),
    ("Jumping jacks", "jumping jack"),
    ("Exercise: bench press", "bench press"),
    ("", "unknown"),
    (None, "unknown"),
    ("!!!", "unknown"),
])
def test_exercise_names_are_normalised(answer, name):
    assert normalize_exercise(answer) == name


@given(st.text())
def test_exercise_normalisation_never_raises(text):
    assert isinstance(normalize_exercise(text), str)
