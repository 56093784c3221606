"""Quirk switches set by hand (``--quirk NAME=off``): which of the official pipeline's quirks a scoring turns
off (or on), so a reference score can be taken with one quirk removed and its effect measured on the whole run.

The names are the fields of :class:`~u2eval.scoring.official.ReferenceQuirks` (how the official pipeline reads
an answer and a truth) and of :class:`~u2eval.scoring.aggregate.ScoringQuirks` (how it places and averages
datasets). Strict mode has no quirks; switches change the reference mode only. A run records its switches in
its manifest, re-scoring redoes them, and the summary's reference mode lists every switch in force.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import fields, replace

from u2eval.errors import ConfigError
from u2eval.scoring.official import ReferenceQuirks
from u2eval.scoring.table_rules import ScoringQuirks

Switches = Mapping[str, bool]

READING_QUIRKS = tuple(f.name for f in fields(ReferenceQuirks))
SCORING_QUIRKS = tuple(f.name for f in fields(ScoringQuirks))
_STATES = {"off": False, "on": True}


def parse_switches(items: Iterable[str]) -> dict[str, bool]:
    """``["row_order_join=off", "keypoints_over_bbox=on"]`` -> {name: on}; one-line errors naming the item."""
    switches: dict[str, bool] = {}
    for item in items:
        name, eq, state = (part.strip() for part in item.partition("="))
        if not eq or state.lower() not in _STATES:
            raise ConfigError(f"--quirk {item!r}: write NAME=off or NAME=on")
        if name not in READING_QUIRKS and name not in SCORING_QUIRKS:
            known = ", ".join(sorted({*READING_QUIRKS, *SCORING_QUIRKS}))
            raise ConfigError(f"--quirk {item!r}: {name!r} is not a quirk of the official pipeline ({known})")
        if name in switches and switches[name] != _STATES[state.lower()]:
            raise ConfigError(f"--quirk {name} is given both on and off")
        switches[name] = _STATES[state.lower()]
    return dict(sorted(switches.items()))


def reading_quirks(switches: Switches) -> ReferenceQuirks:
    """The reference reading of answers and truths with these switches."""
    return replace(ReferenceQuirks(), **{k: v for k, v in switches.items() if k in READING_QUIRKS})


def describe(switches: Switches) -> str:
    """'row_order_join off, keypoints_over_bbox on' (empty when none)."""
    return ", ".join(f"{name} {'on' if on else 'off'}" for name, on in switches.items())
