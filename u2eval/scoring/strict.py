"""Named pure parsers for the strict scoring mode (the truth cells are read by :mod:`u2eval.data.truth`).

Every parser takes ``str | None`` and never raises: it returns a :class:`Parsed` whose ``value`` is a valid
answer (one of the options, one of the 10 location words, a finite float, or text) exactly when
``outcome == "ok"`` (the one exception: a ``null`` answer on a nullable measurement is ``ok`` with value
None). The official scorer's behaviour, quirks included, lives in :mod:`u2eval.scoring.official`.

Shared rules, chosen to follow the benchmark's intent rather than any lenient matching:

- empty or whitespace-only -> ``empty``; a refusal ("I'm sorry, I can't...", "As an AI...") -> ``refused``.
  An answer that is exactly a valid answer is taken before the refusal check; otherwise a refusal wins
  even if an option is mentioned too ("I'm sorry, I cannot tell whether it is malignant" is not a
  diagnosis of malignancy).
- An answer that names two different valid answers is ``unparseable``: the strict mode never guesses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from u2eval.benchmark.sectors import LOCATION_OPTIONS, NOT_VISIBLE, sector_name

ParseOutcome = Literal["ok", "unparseable", "refused", "empty"]


@dataclass(frozen=True)
class Parsed:
    """A parser's result: the answer it found (None unless ``ok``) and how parsing went."""

    value: str | float | None
    outcome: ParseOutcome

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"


EMPTY = Parsed(None, "empty")
REFUSED = Parsed(None, "refused")
UNPARSEABLE = Parsed(None, "unparseable")

_REFUSAL = re.compile(
    r"\b(?:i'?m|i\s+am)\s+(?:sorry|unable|not\s+able)\b"
    r"|\bi\s+apologi[sz]e\b"
    r"|\bas\s+an\s+ai\b"
    r"|\b(?:i|we)\s+(?:can\s*not|can't|could\s+not|couldn't|won't|will\s+not|am\s+unable\s+to)\s+"
    r"(?:provide|give|offer|make|assist|help|answer|diagnose|determine|interpret|analy[sz]e|assess"
    r"|estimate|measure|classify|identify|comply)\b"
    r"|\bcannot\s+provide\s+(?:a\s+|any\s+)?(?:medical\s+)?(?:diagnos|interpretation|assessment|measurement)"
    r"|\bunable\s+to\s+(?:provide|determine|assess|analy[sz]e|interpret)\b",
    re.IGNORECASE,
)


def _prepare(answer: str | None) -> str | None:
    """Lower-cased answer with typographic apostrophes and minus signs made ASCII; None when empty."""
    if answer is None or not answer.strip():
        return None
    return answer.replace("\u2019", "'").replace("\u2212", "-").lower()


def is_refusal(answer: str) -> bool:
    """Whether the answer declines the task (case-insensitive phrase match)."""
    return _REFUSAL.search(answer.replace("\u2019", "'")) is not None


_NOT_ALNUM = re.compile(r"[\W_]+")


def _squash(text: str) -> str:
    # Letters and digits only: "**Only Fetal-Head.**" and "OnlyFetalHead" compare equal.
    return _NOT_ALNUM.sub("", text.lower())


@lru_cache(maxsize=4096)  # option labels are few; judging squashes each one per case otherwise
def _squash_label(option: str) -> str:
    return _squash(option)


# ------------------------------------------------------------------------------------------- options

# A negation directly before a mention, in the same clause, at most one filler word between.
_NEGATION_BEFORE = re.compile(
    r"(?:\b(?:not|no|non|without|never)|n't)[\s-]+"
    r"(?:(?:a|an|the|likely|clearly|definitely|really|necessarily|typical|typically|very)\s+)?$"
)


@lru_cache(maxsize=4096)  # label sets are few and small; judging calls this per case
def _option_pattern(option: str) -> re.Pattern[str]:
    """An option as a phrase: its words (camel case and letter/digit runs split) with any or no
    punctuation between them, bounded by non-alphanumerics, and never part of a decimal number."""
    words = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", option)
    body = r"[\W_]*".join(re.escape(w.lower()) for w in words) if words else re.escape(option.lower())
    return re.compile(rf"(?<![a-z0-9])(?<!\d\.){body}(?![a-z0-9])(?!\.\d)")


def _mentions(text: str, options: Sequence[str]) -> set[str]:
    """The options named in ``text``: a mention inside a longer mention of another option (``benign`` in
    ``non-benign``, ``visible`` in ``not-visible``, ``normal`` in ``normal thyroid``) does not count, nor
    does one right after a negation ("not malignant", "not a 4CH")."""
    spans = [(m.start(), m.end(), opt) for opt in options for m in _option_pattern(opt).finditer(text)]
    named: set[str] = set()
    for start, end, opt in spans:
        inside = any(s <= start and end <= e and e - s > end - start for s, e, o in spans if o != opt)
        if not inside and not _NEGATION_BEFORE.search(text[:start]):
            named.add(opt)
    return named


def _whole_number_option(text: str, options: Sequence[str]) -> str | None:
    # "1.0" or "2." on an integer label set names that label.
    match = re.fullmatch(r"[^\w-]*(\d+)(?:\.0*)?[\W_]*", text)
    if match is None:
        return None
    wanted = str(int(match.group(1)))
    return next((opt for opt in options if _squash_label(opt) == wanted), None)


def parse_option(answer: str | None, options: Sequence[str]) -> Parsed:
    """The one option the answer names (returned as spelled in ``options``).

    Exact match ignores case, quotes, markdown and punctuation ("**Benign.**"); otherwise the answer must
    mention exactly one option (see :func:`_mentions`). Integer labels accept "Score 2", "2." and "**3**".
    Letters (A/B/C) are never read as options: the benchmark lists options by their text.
    """
    text = _prepare(answer)
    if text is None:
        return EMPTY
    options = [opt for opt in options if _squash_label(opt)]  # an option of punctuation only names nothing
    squashed = _squash(text)
    exact = [opt for opt in options if _squash_label(opt) == squashed]
    if len(exact) == 1:
        return Parsed(exact[0], "ok")
    number = _whole_number_option(text, options)
    if number is not None:
        return Parsed(number, "ok")
    if is_refusal(text):
        return REFUSED
    named = _mentions(text, options)
    return Parsed(named.pop(), "ok") if len(named) == 1 else UNPARSEABLE


# ------------------------------------------------------------------------------------------ location

_ROW_WORDS = {"upper": "upper", "top": "upper", "lower": "lower", "bottom": "lower"}
_CENTRE_WORDS = frozenset({"center", "centre", "central", "middle", "mid"})
_SIDE_WORDS = frozenset({"left", "right"})
_NOT_VISIBLE = re.compile(
    r"\bnot\s+(?:clearly\s+)?(?:visible|present|seen|visuali[sz]ed|identified|detected)\b"
    r"|\binvisible\b|\babsent\b|\bnone\b"
)


def _row_of(word: str) -> str | None:
    return "middle" if word in _CENTRE_WORDS else _ROW_WORDS.get(word)


def _column_of(word: str) -> str | None:
    return "center" if word in _CENTRE_WORDS else (word if word in _SIDE_WORDS else None)


def _sector_pair(first: str, second: str) -> str | None:
    """'upper left', 'top-left', 'left upper', 'centre right', 'middle center' -> a sector; else None."""
    row, column = _row_of(first), _column_of(second)
    if row is not None and column is not None:
        return sector_name(row, column)
    row, column = _row_of(second), _column_of(first)
    # Column first: 'left upper', and 'center top' / 'middle-upper' (a centre word then a top/bottom word).
    reversed_order = first in _SIDE_WORDS or (first in _CENTRE_WORDS and row in ("upper", "lower"))
    if reversed_order and row is not None and column is not None:
        return sector_name(row, column)
    return None


def _sectors(text: str) -> tuple[set[str], bool]:
    """Two-word sectors named in ``text``, and whether a lone centre word (centre, middle, ...) occurs."""
    words = re.findall(r"[a-z]+", text)
    found: set[str] = set()
    lone_centre = False
    i = 0
    while i < len(words):
        pair = _sector_pair(words[i], words[i + 1]) if i + 1 < len(words) else None
        if pair is not None:
            found.add(pair)
            i += 2
            continue
        lone_centre = lone_centre or words[i] in _CENTRE_WORDS
        i += 1
    return found, lone_centre


def parse_location(answer: str | None) -> Parsed:
    """One of the 10 location answers (:data:`u2eval.benchmark.sectors.LOCATION_OPTIONS`).

    Accepts top/bottom for upper/lower, centre/central/middle/mid for center, either word order
    ('left upper') and hyphens ('top-left'); 'not visible', 'not present', 'absent', 'none' mean
    not visible. A lone centre word counts only when no two-word sector is named ("the center of the
    lesion is in the upper left" is upper left). Two different sectors -> unparseable. Unlike the
    reference scorer, 'lower center' is lower center.
    """
    text = _prepare(answer)
    if text is None:
        return EMPTY
    squashed = _squash(text)
    exact = next((o for o in LOCATION_OPTIONS if _squash_label(o) == squashed), None)
    if exact is not None:
        return Parsed(exact, "ok")
    if is_refusal(text):
        return REFUSED
    found, lone_centre = _sectors(_NOT_VISIBLE.sub(" ", text))
    if _NOT_VISIBLE.search(text):
        found.add(NOT_VISIBLE)
    if not found and lone_centre:
        found.add("center")
    return Parsed(found.pop(), "ok") if len(found) == 1 else UNPARSEABLE


# ------------------------------------------------------------------------------------------- numbers

_NUMBER = r"(?:(?<![\w.])-)?(?<![\w.])(?:\d+(?:\.\d+)?|\.\d+)"
_FIRST_NUMBER = re.compile(rf"({_NUMBER})(?:\s*(?:-|\u2013|\u2014|to)\s*({_NUMBER}))?", re.ASCII)
_NULL_ANSWER = re.compile(
    r"\b(?:null|none|n/?a|not\s+measurable|unmeasurable|not\s+applicable|cannot\s+be\s+measured"
    r"|not\s+assessable)\b"
)


def _finite(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


def parse_number(answer: str | None, nullable: bool = False) -> Parsed:
    """The number the answer states, as written: no unit conversion ('5.5 cm' -> 5.5, '55%' -> 55,
    '0.55' -> 0.55), so a wrong unit is the model's error, as in the reference.

    The first number in the text wins, except that a range 'A-B' / 'A to B' gives its midpoint
    ('40-45%' -> 42.5). A minus sign counts when it does not follow a letter or digit ('-5' -> -5,
    'EF-55' -> 55). Decimal commas are not read ('0,8' -> 0). With no number, 'null' / 'N/A' /
    'not measurable' is ``ok`` with value None when ``nullable`` (the prompt allows it), else
    ``unparseable``.
    """
    text = _prepare(answer)
    if text is None:
        return EMPTY
    if is_refusal(text):
        return REFUSED
    match = _FIRST_NUMBER.search(text)
    if match is not None:
        ends = [float(g) for g in match.groups() if g is not None]
        value = sum(ends) / len(ends)  # a range gives its midpoint
        return Parsed(value, "ok") if math.isfinite(value) else UNPARSEABLE
    if _NULL_ANSWER.search(text):
        return Parsed(None, "ok") if nullable else UNPARSEABLE
    return UNPARSEABLE


# ---------------------------------------------------------------------------------------------- text

_LEADING_LABEL = re.compile(r"^[\s*_#>`]*(?:caption|report)[\s*_]*:[\s*_]*", re.IGNORECASE)


def parse_text(answer: str | None) -> Parsed:
    """The answer's text, stripped, without a leading 'Caption:' / 'Report:' label (markdown allowed)."""
    if answer is None:
        return EMPTY
    text = _LEADING_LABEL.sub("", answer.strip(), count=1).strip()
    if not text:
        return EMPTY
    return REFUSED if is_refusal(text) else Parsed(text, "ok")
