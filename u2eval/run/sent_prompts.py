"""What a run sent, exactly: each case's request as the parts it held (``cases.jsonl``'s ``prompt``), and every
text once, by its sha256, in ``prompts.jsonl``.

The text part of a request is its sections (role, instruction, format; or the dataset's own prompt) joined by a
blank line, so ``prompt_text`` rebuilds it byte for byte; the image is named by the sha256 of its bytes as read
(a resize for a provider's budget is recorded with the answer). Ablation variants that sent different words
therefore show different hashes, and the same words the same hash.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import TracebackType

from u2eval.records import ImagePart, Prompt
from u2eval.run.locks import LineFile
from u2eval.run.records import SentPart, SentPrompt

PROMPTS_FILE = "prompts.jsonl"


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class PromptTexts:
    """Writes ``prompts.jsonl`` afresh for a run (as ``cases.jsonl`` is) and turns prompts into ``SentPrompt``s."""

    def __init__(self, path: Path) -> None:
        self._file = LineFile(path)
        self._seen: set[str] = set()

    def _text(self, part: str, text: str) -> SentPart:
        digest = text_sha256(text)
        if digest not in self._seen:
            self._seen.add(digest)
            self._file.write(json.dumps({"sha256": digest, "text": text}, ensure_ascii=False) + "\n")
        return SentPart(part=part, sha256=digest)

    def record(self, prompt: Prompt) -> SentPrompt:
        parts = [self._text("system", prompt.system)] if prompt.system else []
        for piece in prompt.parts:
            if isinstance(piece, ImagePart):
                parts.append(SentPart(part="image", sha256=piece.sha256 or hashlib.sha256(piece.data).hexdigest()))
            else:
                parts += [self._text(name, text) for name, text in prompt.sections or (("text", piece.text),)]
        return SentPrompt(template=prompt.template, template_sha256=prompt.template_sha256, parts=parts)

    def __enter__(self) -> PromptTexts:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self._file.close()


def read_texts(folder: Path) -> dict[str, str]:
    """sha256 -> text from a run folder's ``prompts.jsonl`` (empty for runs made before it existed)."""
    path = folder / PROMPTS_FILE
    if not path.is_file():
        return {}
    texts: dict[str, str] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                texts[record["sha256"]] = record["text"]
    return texts


def prompt_text(sent: SentPrompt, texts: dict[str, str]) -> str:
    """The text part as it was sent: the sections joined by a blank line."""
    return "\n\n".join(texts[p.sha256] for p in sent.parts if p.part not in ("image", "system"))
