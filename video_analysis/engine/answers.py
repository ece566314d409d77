"""Reading scores, exercise names and descriptions out of a model's free text.

Models phrase the same answer many ways (`8/10`, `Score: 8`, `**8**/10`,
`significance 8 out of 10`, `eight out of ten`). These functions never raise:
an answer with nothing readable gives None (score) or "unknown" (exercise).
"""
from __future__ import annotations

import re
from typing import Optional

_NUMBER_WORDS = {
    "zero": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5,
    "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
}
_NUMBER = r"(\d+(?:[.,]\d+)?|" + "|".join(_NUMBER_WORDS) + r")"
# Most specific first: an explicit "out of 10" beats a keyword, which beats a bare number.
_OUT_OF_TEN = re.compile(_NUMBER + r"\s*(?:/|out\s+of)\s*(?:10|ten)\b", re.IGNORECASE)
_KEYWORD = re.compile(
    r"\b(?:significance|score|rating|rated|importance|interest)\b(?:\s*(?:score|level|rating))?"
    r"\s*(?:[:=\-]|is|of)?\s*" + _NUMBER + r"\b",
    re.IGNORECASE,
)
_BARE_NUMBER = re.compile(r"^\s*" + _NUMBER + r"\s*\.?\s*$", re.IGNORECASE)
_MARKUP = re.compile(r"[*_`#]")


def _to_score(token: str) -> Optional[int]:
    token = token.lower().replace(",", ".")
    value = float(_NUMBER_WORDS[token]) if token in _NUMBER_WORDS else float(token)
    if value > 10:
        return None  # "15/10" is not a reading we can trust
    # Half up, and a zero counts as the lowest score on the scale.
    return max(1, int(value + 0.5))


def parse_significance(text: Optional[str]) -> Optional[int]:
    """The 1-10 score in a model answer, or None when it states none."""
    if not text:
        return None
    plain = _MARKUP.sub("", str(text))
    for pattern in (_OUT_OF_TEN, _KEYWORD, _BARE_NUMBER):
        match = pattern.search(plain)
        if match:
            try:
                return _to_score(match.group(1))
            except (ValueError, OverflowError):
                return None
    return None


# The one pattern for "Exercise: NAME": its group is the name; the markup it allows around the words
# matters only in raw text (descriptions), names are read after _MARKUP is removed.
_EXERCISE_LINE = re.compile(r"[*_`]*\bexercise(?:\s+name)?[*_`]*\s*[:=\-]\s*[*_`]*([^\n.;,(]+)", re.IGNORECASE)
_ALIASES = {
    "pushup": "push-up", "push up": "push-up", "press up": "push-up", "press-up": "push-up",
    "situp": "sit-up", "sit up": "sit-up", "pullup": "pull-up", "pull up": "pull-up",
    "chinup": "chin-up", "chin up": "chin-up",
    "jumping jack": "jumping jack", "star jump": "jumping jack",
    "resting": "rest", "none": "rest", "no exercise": "rest", "idle": "rest", "break": "rest",
    "pause": "rest", "standing": "rest", "nothing": "rest",
}
# Words that end in "s" without being plurals.
_NOT_PLURAL = ("press", "cross", "abs", "yes")
REST = "rest"
UNKNOWN = "unknown"


def _singular(word: str) -> str:
    if len(word) > 2 and word.endswith("s") and not word.endswith(("ss", "us", "is")) and word not in _NOT_PLURAL:
        return word[:-1]
    return word


def normalize_exercise(text: Optional[str]) -> str:
    """A canonical, lower-case exercise name from a model answer.

    Prefers an `Exercise: X` line; otherwise the first line. Plurals, case,
    punctuation and common spellings are folded so "Push-ups", "pushup" and
    "push up" all become "push-up" and consecutive segments merge.
    """
    if not text:
        return UNKNOWN
    plain = _MARKUP.sub("", str(text))
    match = _EXERCISE_LINE.search(plain)
    name = match.group(1) if match else plain.strip().splitlines()[0] if plain.strip() else ""
    name = re.sub(r"[^a-z\- ]+", " ", name.lower())
    words = [_singular(w) for w in re.sub(r"\s+", " ", name).strip().split(" ") if w]
    name = " ".join(words[:4]).strip(" -")
    if not name:
        return UNKNOWN
    if name in _ALIASES:
        return _ALIASES[name]
    compact = name.replace("-", " ")
    if compact in _ALIASES:
        return _ALIASES[compact]
    if compact.replace(" ", "") in _ALIASES:
        return _ALIASES[compact.replace(" ", "")]
    return name


_SCORE_LINE = re.compile(r"^\W*(significance|score|rating)\b.*$", re.IGNORECASE | re.MULTILINE)
_LEADING_SEPARATORS = re.compile(r"^[\s.;,:\-*_`#]+")


def _text_without(pattern: re.Pattern, text: str) -> str:
    return re.sub(r"\s+", " ", pattern.sub("", text)).strip()


def highlight_description(text: str) -> str:
    """What happens in the segment: the answer without its score line (the whole answer if that is all)."""
    return _text_without(_SCORE_LINE, text) or text


def exercise_description(text: str) -> str:
    """The answer without its "Exercise: NAME" statement; "" when nothing else was said."""
    # What followed the name on its line ("Exercise: squat. Knees bent.") keeps no leading ". ".
    return _LEADING_SEPARATORS.sub("", _text_without(_EXERCISE_LINE, text))
