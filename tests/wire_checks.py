"""What the provider wire tests check on a run folder: the images that reached the server, the stored
answers and judgements, and that no key was written anywhere."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

from u2eval.benchmark.prompts import render
from u2eval.benchmark.tasks import get_task, select_tasks
from u2eval.data.reader import iter_cases
from u2eval.data.sources import resolve_source
from u2eval.models.protocol import ModelAdapter, ModelRequest
from u2eval.records import Completion, Judgement
from u2eval.run.dispatch import Dispatcher
from u2eval.run.pacing import DispatchOptions


def case_images(tasks: tuple[str, ...], limit: int | None) -> dict[str, bytes]:
    """case_id -> the image bytes of each case a run of the bundled sample would ask about."""
    specs = select_tasks(tasks)
    source = resolve_source("sample", tasks=specs)
    return {c.case_id: c.image for c in iter_cases(source, specs, limit=limit, on_error=print)}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def completions(folder: Path) -> dict[str, Completion]:
    """case_id -> the latest stored Completion (the store is append-only: later lines win)."""
    latest: dict[str, Completion] = {}
    for line in (folder / "responses.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            completion = Completion.model_validate_json(line)
            latest[completion.case_id] = completion
    return latest


def judgements(folder: Path) -> dict[str, Judgement]:
    lines = (folder / "judgements.jsonl").read_text(encoding="utf-8").splitlines()
    return {j.case_id: j for j in (Judgement.model_validate_json(line) for line in lines if line.strip())}


def assert_no_secret(folder: Path, secret: str) -> int:
    """No file under ``folder`` holds ``secret`` (nor its start); returns how many files were read."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    for path in files:
        data = path.read_bytes()
        assert secret.encode() not in data, f"the API key leaked into {path}"
        assert secret[:12].encode() not in data, f"the start of the API key leaked into {path}"
    return len(files)


def manifest(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    return data


def request_for(case_id: str) -> ModelRequest:
    """The request the runner would make for one case of the bundled sample."""
    specs = select_tasks((case_id.split("/")[0],))
    cases = iter_cases(resolve_source("sample", tasks=specs), specs, on_error=print)
    case = next(c for c in cases if c.case_id == case_id)
    return ModelRequest(key=f"key-{case_id}", case=case, prompt=render(case, get_task(case.task)))


def dispatch(adapter: ModelAdapter, requests: list[ModelRequest], options: DispatchOptions) -> list[Completion]:
    """Requests through u2eval's real dispatcher; the adapter is closed after."""
    done: list[Completion] = []

    async def go() -> None:
        try:
            await Dispatcher(adapter, options).run(requests, done.extend)
        finally:
            await adapter.aclose()

    asyncio.run(go())
    return done
