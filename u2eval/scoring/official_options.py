"""Stage (a) of the official pipeline: the option list it re-extracts from a dataset's official prompt, and the
matcher that turns an answer into the first option it finds (facts §10.1-§10.3): exact, multi-word phrases and
context patterns, single words, substrings, a word scan, the fetal fallbacks; each in option-list order.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from u2eval.benchmark.sectors import LOCATION_OPTIONS
from u2eval.benchmark.tasks import get_task
from u2eval.errors import ConfigError
from u2eval.scoring.official import ReferenceQuirks

# The options branch appends these when the prompt text contains them, 'fetal brain' checked first.
_MENTIONED_OPTIONS = ("fetal brain", "maternal cervix", "fetal abdomen", "fetal femur", "fetal thorax", "other")


def _od_options(anatomy: str, channel: str, quirks: ReferenceQuirks) -> tuple[str, ...]:
    # The OD prompt says "Location Options:", so the generic comma-split branch reads it: leading spaces
    # stay, the final period stays, and option words the prompt mentions (only ever via the substituted
    # anatomy and channel names) are appended.
    words = list(LOCATION_OPTIONS)
    if quirks.od_period_option:
        words[-1] += "."
    options = [w if i == 0 or not quirks.leading_space_options else f" {w}" for i, w in enumerate(words)]
    mentioned = f"{anatomy}\n{channel}".lower()
    for extra in _MENTIONED_OPTIONS:
        wanted = quirks.other_option if extra == "other" else quirks.prompt_mention_options
        if wanted and extra in mentioned and extra not in options:
            options.append(extra)
    return tuple(options)


def reference_options(
    task_key: str, dataset_id: str, anatomy: str = "", channel: str = "", quirks: ReferenceQuirks | None = None
) -> tuple[str, ...]:
    """The option list stage (a) extracts from the official prompt of a dataset, as the task file says
    (``official.options``): LL and KD prompts say "following list:", which gives the 10 clean location words;
    OD prompts embed the row's ``anatomy`` and ``channel``, which may add options; a DD / VRA prompt lists its
    dataset's own (``official.options`` of the dataset). Empty for a dataset the kit has no prompt for:
    stage (a) then leaves the answer unchanged."""
    quirks = quirks or ReferenceQuirks()
    try:
        task = get_task(task_key)
    except ConfigError:
        return ()
    how = task.official.options if task.official is not None else "none"
    if how == "location_list":
        return LOCATION_OPTIONS
    if how == "location_with_target":
        return _od_options(anatomy, channel, quirks)
    dataset = next((d for d in task.datasets if d.id == dataset_id), None)
    if how != "dataset_prompt" or dataset is None or not dataset.official.options:
        return ()
    base, extras = dataset.official.options, dataset.official.extra_options
    if not quirks.leading_space_options:
        base = tuple(o.strip() for o in base)
    kept = tuple(e for e in extras if (quirks.other_option if e == "other" else quirks.prompt_mention_options))
    return base + kept


@dataclass(frozen=True)
class StageA:
    """Stage (a)'s rewrite of one answer. ``skips_dataset``: the official pipeline cannot process this
    answer (a JSON number or NaN instead of a string): stage (a) drops the line, the row-order join then
    fails and the classification scorer skips the whole dataset for that model (facts §10.6)."""

    output: str
    skips_dataset: bool = False


_QUOTES_AT_ENDS = re.compile(r"^['\"]+|['\"]+$")


_WORD_PUNCTUATION = ".,;:!?'\""


_ARTICLE = r"(?:a |an |the |)"


_QUOTE = r"['\"]?"


# Stage (a)'s context phrases for multi-word options, as alternations (each may also be empty where '|').
_IS_PHRASES = (
    "typical for |indicative of |suggestive of |consistent with |compatible with |showing |demonstrates |revealing |"
)


_AS_PHRASES = (
    "appears to be|identified as|classified as|recognized as|interpreted as|diagnosed as|confirmed as"
    "|representing|shows|demonstrates"
)


_SUBJECTS = (
    "image|ultrasound|scan|examination|visualization|assessment|analysis|interpretation|finding|result"
    "|picture|sonogram|sonographic features"
)


_VERBS = "is |shows |demonstrates |reveals |indicates |suggests |points to |confirms |indicate |"


# Step (vi): loose words mapped to fetal-plane options, in this order.
_FETAL_FALLBACKS = (
    ("maternal", "maternal cervix"),
    ("cervix", "maternal cervix"),
    ("maternal cervical", "maternal cervix"),
    ("fetal", "fetal brain"),
    ("abdomen", "fetal abdomen"),
    ("femur", "fetal femur"),
    ("thorax", "fetal thorax"),
    ("brain", "fetal brain"),
)


def official_normalise(text: str) -> str:
    """Stage (a)'s normalisation: lower-case, whitespace runs to one space, strip, then quotes at the ends."""
    return _QUOTES_AT_ENDS.sub("", re.sub(r"\s+", " ", text.lower()).strip())


def _multi_word_patterns(norm: str) -> tuple[str, ...]:
    e = re.escape(norm)
    return (
        rf"\b{e}\b",
        rf"['\"]{e}['\"]",
        rf"is {_ARTICLE}(?:{_IS_PHRASES}){_QUOTE}{e}{_QUOTE}",
        rf"(?:{_AS_PHRASES}) {_ARTICLE}{_QUOTE}{e}{_QUOTE}",
        rf"(?:the |)(?:{_SUBJECTS}) (?:{_VERBS}){_ARTICLE}{_QUOTE}{e}{_QUOTE}",
    )


def _step_exact(answer: str, options: Sequence[str]) -> str | None:
    key = answer.lower().strip()  # an option with a leading space never matches here
    return next((o for o in options if o.lower() == key), None)


@lru_cache(maxsize=4096)  # option lists are few; judging meets each option once per case
def _multi_word_regex(norm_option: str) -> re.Pattern[str]:
    """The context patterns of one option as one alternation: it matches where any of them does."""
    return re.compile("|".join(f"(?:{p})" for p in _multi_word_patterns(norm_option)))


@lru_cache(maxsize=4096)
def _word_regex(norm_option: str) -> re.Pattern[str]:
    return re.compile(rf"\b{re.escape(norm_option)}\b")


@lru_cache(maxsize=1024)
def _normalised(options: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(official_normalise(o) for o in options)


def _step_multi_word(norm: str, options: Sequence[str], normed: Sequence[str]) -> str | None:
    for option, n in zip(options, normed, strict=True):
        if " " in n and _multi_word_regex(n).search(norm):
            return option
    return None


def _step_single_word(norm: str, options: Sequence[str], normed: Sequence[str]) -> str | None:
    # The official step also skips a word that belongs to a multi-word option found in the answer, but
    # the multi-word step has returned already whenever one is found, so that check never fires.
    for option, n in zip(options, normed, strict=True):
        if " " not in n and _word_regex(n).search(norm):
            return option
    return None


def _step_substring(norm: str, options: Sequence[str], normed: Sequence[str]) -> str | None:
    return next((o for o, n in zip(options, normed, strict=True) if n in norm), None)


def _step_word_scan(answer: str, options: Sequence[str]) -> str | None:
    words = answer.split()
    for word in words:
        bare = word.lower().strip(_WORD_PUNCTUATION)
        for option in options:
            parts = option.lower().split()
            if bare == option.lower():
                return option
            if not parts or bare != parts[0]:
                continue
            start = words.index(word)  # the word's first occurrence, wherever this one is
            if len(words) > start + len(parts) - 1 and all(
                words[start + j].lower().strip(_WORD_PUNCTUATION) == part for j, part in enumerate(parts[1:], 1)
            ):
                return option
    return None


def _step_fetal(norm: str, options: Sequence[str]) -> str | None:
    for key, value in _FETAL_FALLBACKS:
        if key in norm and value in options:
            lowered = [o.lower() for o in options]
            if not any(key in o and o != value.lower() and o in norm for o in lowered):
                return value
    return None


def _match_option(answer: str, options: Sequence[str]) -> str:
    norm = official_normalise(answer)
    normed = _normalised(tuple(options))
    found = (
        _step_exact(answer, options)
        or _step_multi_word(norm, options, normed)
        or _step_single_word(norm, options, normed)
        or _step_substring(norm, options, normed)
        or _step_word_scan(answer, options)
        or _step_fetal(norm, options)
    )
    return found or ""


def reference_stage_a_option(answer: object, options: Sequence[str]) -> StageA:
    """Stage (a) on one answer (any JSON value, as the kit's files held): the first option found by
    steps (i) exact, (ii) multi-word phrases and context patterns, (iii) single words, (iv) substrings,
    (v) a word scan, (vi) fetal fallbacks, each in option-list order (not answer order); "" if none.

    Because options are tried in list order and substrings count, an error message such as
    "API call failed: 500" becomes '0' on 44/57 and '5' on 40, and "1.0" on 57 becomes '0'.
    """
    if not options:  # no option list: the answer passes through, and stage (b) cannot strip a non-string
        return StageA(answer) if isinstance(answer, str) else StageA("", skips_dataset=True)
    if not answer:  # None, "", 0, [] ...
        return StageA("")
    if not isinstance(answer, str):
        return StageA("", skips_dataset=True)
    return StageA(_match_option(answer, options))
