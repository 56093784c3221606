"""The nine image sectors the detection tasks answer with, and the official rule that places a point in one."""

from __future__ import annotations

NOT_VISIBLE = "not visible"

# The ten answers of the detection tasks, in the order the official prompts list them.
LOCATION_OPTIONS: tuple[str, ...] = (
    "upper left",
    "upper center",
    "upper right",
    "middle left",
    "center",
    "middle right",
    "lower left",
    "lower center",
    "lower right",
    NOT_VISIBLE,
)


def sector_name(row: str, column: str) -> str:
    """The official spelling of a 9-sector cell: 'center' alone for the middle, else '<row> <column>'."""
    return "center" if (row, column) == ("middle", "center") else f"{row} {column}"


def sector_from_centre(cx: float, cy: float) -> str:
    """The official 9-sector rule: rows and columns split at 0.45 and 0.55 with strict '<'."""
    row = "upper" if cy < 0.45 else "middle" if cy < 0.55 else "lower"
    column = "left" if cx < 0.45 else "center" if cx < 0.55 else "right"
    return sector_name(row, column)
