"""A judge model's stand-in: answers u2eval's judge prompts deterministically from their content.

Served by :class:`tests.openai_server.OpenAIServer` (``answer=judge_answer``), so the judge pass talks to it
through the real ``openai`` SDK, with the server's faults on demand. No real judge model can be reached from our
machines; this one reads the prompts as a careful, literal judge would:

- extraction: the answer between the dashes; the listed choice mentioned last is the one it settled on (a rule
  strict mode never uses, so the stand-in rescues answers such as "not benign: malignant"), a number question
  takes the answer's last number; nothing found is ``NO ANSWER``.
- clinical: each sentence that names a known structure is a finding (its size in mm, its grading category,
  its side and position words, its echo words, and whether it is negated); findings pair by structure, in
  order; the differences are those of location, category, size and appearance words.

Anything else is answered "benign", as the plain server does.
"""

from __future__ import annotations

import json
import re
from typing import Any

_DASHES = re.compile(r"----------\n(.*?)\n----------", re.DOTALL)
# What a sentence is about: a lesion's kind before the organ it lies in ("no nodule in the thyroid").
_STRUCTURES = (
    "nodule", "cyst", "mass", "lesion", "gallstone", "calcification", "plaque", "effusion", "ascites", "b-line",
    "consolidation", "lymph node", "gallbladder", "thyroid", "liver", "kidney", "spleen", "pancreas", "breast",
    "fetus", "fetal", "placenta", "pleura", "heart", "ventricle", "artery", "vein", "ovary", "uterus", "prostate",
    "bladder",
)  # fmt: skip
_SIDES = ("left", "right", "upper", "lower", "middle", "anterior", "posterior", "lobe", "pole", "isthmus")
_ECHO = ("hypoechoic", "hyperechoic", "anechoic", "isoechoic", "heterogeneous", "homogeneous", "irregular", "smooth")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(mm|cm)\b", re.IGNORECASE)
_CATEGORY = re.compile(r"\b(ti-?rads|bi-?rads|lus(?:\s*score)?)\s*(\d[a-c]?)", re.IGNORECASE)
_NEGATED = re.compile(r"\b(no|without|negative for|absent)\b", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _user_text(body: dict[str, Any]) -> str:
    parts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [p.get("text", "") for p in content if p.get("type") == "text"]
    return "\n".join(parts)


def _extraction(text: str) -> str:
    blocks = _DASHES.findall(text)
    answer = blocks[-1] if blocks else ""
    if "one number" in text:
        numbers = _NUMBER.findall(answer)
        return numbers[-1] if numbers else "NO ANSWER"
    choices = re.findall(r"^- (.+)$", text.split("The model replied")[0], re.MULTILINE)
    lowered = answer.lower()
    last: dict[str, int] = {}
    claimed: list[tuple[int, int]] = []
    for choice in sorted(choices, key=len, reverse=True):  # 'upper left' is claimed before 'left'
        for found in re.finditer(rf"(?<![\w-]){re.escape(choice.lower())}(?![\w-])", lowered):
            if not any(s <= found.start() < e for s, e in claimed):
                claimed.append(found.span())
                last[choice] = found.start()
    if not last:
        return "NO ANSWER"
    return max(last, key=lambda c: last[c])


def _finding(sentence: str) -> dict[str, Any] | None:
    lowered = sentence.lower()
    structure = next((s for s in _STRUCTURES if s in lowered), None)
    if structure is None:
        return None
    size = _SIZE.search(sentence)
    size_mm = None if size is None else float(size.group(1)) * (10.0 if size.group(2).lower() == "cm" else 1.0)
    category = _CATEGORY.search(sentence)
    sides = [w for w in _SIDES if re.search(rf"\b{w}\b", lowered)]
    echo = [w for w in _ECHO if w in lowered]
    return {
        "structure": structure,
        "location": " ".join(sides) or None,
        "size_mm": size_mm,
        "appearance": ", ".join(echo) or None,
        "category": f"{category.group(1)} {category.group(2)}" if category else None,
        "present": _NEGATED.search(lowered) is None,
    }


def findings(text: str) -> list[dict[str, Any]]:
    sentences = re.split(r"(?<=\.)\s+|\n+", text)
    return [f for s in sentences if (f := _finding(s)) is not None]


def _differences(ref: dict[str, Any], ans: dict[str, Any]) -> list[str]:
    found = []
    if ref["location"] and ans["location"] and ref["location"] != ans["location"]:
        found.append("location")
    if ref["category"] and ans["category"] and ref["category"].lower() != ans["category"].lower():
        found.append("category")
    if ref["size_mm"] is not None and ans["size_mm"] is not None and ref["size_mm"] != ans["size_mm"]:
        found.append("measurement")
    if ref["appearance"] and ans["appearance"] and ref["appearance"] != ans["appearance"]:
        found.append("appearance")
    return found


def compare(reference: str, answer: str) -> dict[str, Any]:
    """The comparison the stand-in answers for a reference text and a generated one."""
    ref, ans = findings(reference), findings(answer)
    pairs, used = [], set()
    for i, r in enumerate(ref):
        j = next((j for j, a in enumerate(ans) if j not in used and a["structure"] == r["structure"]), None)
        if j is not None:
            used.add(j)
            pairs.append({"reference": i, "answer": j, "differences": _differences(r, ans[j])})
    return {"reference": ref, "answer": ans, "pairs": pairs}


def judge_answer(body: dict[str, Any]) -> str:
    """The stand-in's reply to one chat request."""
    text = _user_text(body)
    if "Reference report:" in text or "Reference caption:" in text:
        blocks = _DASHES.findall(text)
        reference, answer = (blocks + ["", ""])[:2]
        return json.dumps(compare(reference, answer))
    if "The model replied, between the two lines of dashes" in text:
        return _extraction(text)
    return "benign"
