"""A run records exactly what it sent: each case's request as its parts, each text once by hash, so ablation
variants that sent different words can be told apart from the run folders alone."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from fake_models import Oracle

from u2eval.benchmark.prompts import PromptOptions
from u2eval.models.protocol import ModelRequest
from u2eval.records import Completion
from u2eval.run.folder import RunFolder
from u2eval.run.runner import RunOptions, run
from u2eval.run.sent_prompts import prompt_text, read_texts


class Recorder(Oracle):
    """Answers as the oracle does and remembers the text of every request, by case."""

    def __init__(self) -> None:
        super().__init__(skill=0.5)
        self.sent: dict[str, str] = {}

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        for request in requests:
            self.sent[request.case.case_id] = request.prompt.text
        return await super().generate(requests)


def _recorded(folder: Path) -> dict[str, str]:
    texts = read_texts(folder)
    return {rc.case.case_id: prompt_text(rc.prompt, texts) for rc in RunFolder(folder).cases() if rc.prompt is not None}


def test_the_text_each_case_was_sent_is_rebuilt_byte_for_byte_from_the_run_folder(tmp_path: Path) -> None:
    model = Recorder()
    run(RunOptions(model="recorder", tasks=("dd", "od", "rg"), limit=2, out=tmp_path / "run"), adapter=model)
    recorded = _recorded(tmp_path / "run")
    assert recorded == model.sent and len(recorded) > 10
    first = RunFolder(tmp_path / "run").cases()[0]
    assert first.prompt is not None and [p.part for p in first.prompt.parts] == [
        "image",
        "role",
        "instruction",
        "format",
    ]
    assert first.prompt.parts[0].sha256 == first.case.image_sha256
    texts = (tmp_path / "run" / "prompts.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(texts) == len({json.loads(t)["sha256"] for t in texts})  # each text once
    assert "prompt" not in first.case.columns  # the row's own prompt was not sent under --prompt-source ours


def test_ablation_variants_that_sent_different_words_show_different_texts(tmp_path: Path) -> None:
    for name, options in (("ours", PromptOptions()), ("noanatomy", PromptOptions(anatomy=False))):
        run(RunOptions(model="o", tasks=("ll",), limit=1, out=tmp_path / name, prompt=options), adapter=Recorder())
    ours, plain = _recorded(tmp_path / "ours"), _recorded(tmp_path / "noanatomy")
    assert ours.keys() == plain.keys() and all(ours[c] != plain[c] for c in ours)
    same_role = {
        p.sha256
        for rc in RunFolder(tmp_path / "ours").cases()
        if rc.prompt
        for p in rc.prompt.parts
        if p.part == "format"
    }
    other_role = {
        p.sha256
        for rc in RunFolder(tmp_path / "noanatomy").cases()
        if rc.prompt
        for p in rc.prompt.parts
        if p.part == "format"
    }
    assert same_role == other_role  # the unchanged part keeps its hash


def test_the_dataset_prompt_source_records_the_rows_own_text(tmp_path: Path) -> None:
    model = Recorder()
    run(
        RunOptions(model="o", tasks=("cg",), limit=1, out=tmp_path / "run", prompt=PromptOptions(source="dataset")),
        adapter=model,
    )
    (case,) = [rc for rc in RunFolder(tmp_path / "run").cases()][:1]
    assert case.prompt is not None and [p.part for p in case.prompt.parts] == ["image", "dataset"]
    assert _recorded(tmp_path / "run") == model.sent and "prompt" in case.case.columns
