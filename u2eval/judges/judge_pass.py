"""``u2eval judge RUN --model JUDGE``: a judge model reads a finished run's stored answers, never the model's.

Sent to the judge (``u2eval.scoring.judged.judge_kind``): each answer strict could not parse, on a task with a
closed answer (extraction), and each counted report or caption (the clinical comparison). The requests go
through the run's own dispatcher (concurrency, rate limits, retries, timeouts) into the judge's crash-safe store
``judges/<name>/responses.jsonl``, keyed by the judge's identity and the prompt, so a second pass asks only what
the first did not get (a failed call, an answer since changed) and a killed pass resumes. Then every reading is
made from the store, the judge becomes the run's active judge, and the run is re-scored: strict and reference
as before, byte for byte, and the ``judged`` mode and clinical score beside them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from u2eval.errors import ConfigError
from u2eval.judges.prompts import KINDS, judge_prompt, template_hashes
from u2eval.judges.replies import read_reply
from u2eval.models.protocol import AdapterOptions, ModelAdapter, ModelRequest
from u2eval.models.registry import Preset, create_adapter, merge_args, resolve_model
from u2eval.records import Case, CaseMeta, Completion, GenerationConfig, Judgement, Prompt, freeze_columns
from u2eval.run.dispatch import Dispatcher
from u2eval.run.folder import RunFolder
from u2eval.run.locks import disk_full_is_clear, exclusive
from u2eval.run.options import ProgressHook, RunProgress
from u2eval.run.pacing import DispatchOptions
from u2eval.run.scoring_pass import judge_answers, score_folder
from u2eval.run.store import ResponseStore, request_key
from u2eval.scoring.aggregate import Summary
from u2eval.scoring.judge_records import JudgeIdentity, JudgeKind, JudgeReading
from u2eval.scoring.judged import judge_kind

log = logging.getLogger(__name__)

# A judge reads at temperature 0 with room for the clinical comparison's JSON, unless its preset or the
# command says otherwise.
JUDGE_GENERATION = GenerationConfig(temperature=0.0, top_p=1.0, max_tokens=2048)
RETIREMENT_WARNING_DAYS = 90


@dataclass(frozen=True)
class JudgeOptions:
    run: Path
    model: str
    base_url: str | None = None
    revision: str | None = None  # the judge's weights (a commit, a tag): a judge behind a server says which
    model_args: Mapping[str, object] = field(default_factory=dict)
    kinds: tuple[JudgeKind, ...] = KINDS  # what to ask about (the readings of the others are kept)
    concurrency: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int = 0
    timeout_s: float | None = None
    max_attempts: int | None = None
    rpm: float | None = None
    tpm: float | None = None


@dataclass(frozen=True)
class JudgePassResult:
    identity: JudgeIdentity
    folder: Path  # the judge's folder in the run
    to_judge: dict[str, int]  # kind asked about -> answers that need a reading
    asked: int  # requests made by this pass (identical prompts are asked once)
    reused: int  # distinct prompts the judge's store already answered
    failed: int  # answers whose judge call failed (asked again by the next pass)
    summary: Summary


@dataclass(frozen=True)
class _Item:
    kind: JudgeKind
    meta: CaseMeta
    answer: str | None
    request: ModelRequest


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "judge"


def _endpoint(options: JudgeOptions, preset: Preset | None) -> str | None:
    """Where the judge was reached, when not at its provider's own address (credentials never kept)."""
    urls = options.base_url or (preset.base_url if preset is not None else None)
    if not urls:
        return None
    public = []
    for url in urls.split(","):
        parts = urlsplit(url.strip())
        netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
        public.append(urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", "")))
    return ",".join(public)


def identity_of(
    adapter: ModelAdapter, preset: Preset | None, generation: GenerationConfig, options: JudgeOptions
) -> JudgeIdentity:
    """The judge's identity; its name is the model's plus a hash of what could change its readings (model,
    weights, endpoint, settings, prompts, arguments), so another of these is another judge folder. When the
    provider retires it is recorded, not hashed: it changes no reading."""
    info = adapter.info
    fields: dict[str, object] = {
        "adapter": info.adapter,
        "model": info.model,
        "revision": options.revision or info.revision,
        "endpoint": _endpoint(options, preset),
        "generation": generation.model_dump(mode="json"),
        "templates": template_hashes(),
        "model_args": dict(options.model_args),
    }
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:8]
    retires = preset.retires if preset is not None else None
    price = preset.price.model_dump(mode="json") if preset is not None and preset.price is not None else None
    named = {"name": f"{_slug(info.model)}-{digest}", "retires": retires, "price": price}
    return JudgeIdentity.model_validate(fields | named)


def retirement_warning(retires: str | None, today: dt.date) -> str | None:
    """A line to say when the judge's provider retires it soon (or has): its readings cannot be redone then."""
    if retires is None:
        return None
    try:
        parts = [int(p) for p in retires.split("-")]
        day = dt.date(parts[0], parts[1], parts[2] if len(parts) > 2 else 1)
    except (ValueError, IndexError):
        return f"the judge's preset gives a retirement date that cannot be read: {retires!r}"
    if day <= today:
        return f"the judge model was due to retire on {retires}: its provider may no longer serve it"
    if (day - today).days <= RETIREMENT_WARNING_DAYS:
        return f"the judge model retires on {retires}: plan its replacement (u2eval judge-agreement compares two)"
    return None


def case_of(meta: CaseMeta) -> Case:
    """The case as an adapter sees it for a judge request: its record without the image (the judge reads text)."""
    return Case(
        case_id=meta.case_id,
        task=meta.task,
        dataset_id=meta.dataset_id,
        dataset_name=meta.dataset_name,
        source_file=meta.source_file,
        row_index=meta.row_index,
        anatomy=meta.anatomy,
        scenario=meta.scenario,
        truth=meta.truth,
        options=tuple(meta.options),
        image=b"",
        image_format="",
        columns=freeze_columns(meta.columns),
    )


def _items(
    answers: list[tuple[CaseMeta, Completion]], judgements: list[Judgement], key_of: Callable[[Prompt], str]
) -> list[_Item]:
    items = []
    for (meta, _), judgement in zip(answers, judgements, strict=True):
        kind = judge_kind(judgement)
        if kind is None:
            continue
        prompt = judge_prompt(kind, meta, judgement.answer)
        request = ModelRequest(key=key_of(prompt), case=case_of(meta), prompt=prompt)
        items.append(_Item(kind, meta, judgement.answer, request))
    return items


def resolve_judge(
    options: JudgeOptions, adapter: ModelAdapter | None
) -> tuple[ModelAdapter, Preset | None, GenerationConfig, DispatchOptions]:
    resolved = resolve_model(options.model) if adapter is None else None
    preset = resolved.preset if resolved is not None else None
    base = preset.generation if preset is not None else JUDGE_GENERATION
    # A preset made for answering may allow fewer tokens than a clinical comparison's JSON needs.
    updates: dict[str, object] = {"seed": options.seed, "max_tokens": max(base.max_tokens, JUDGE_GENERATION.max_tokens)}
    if options.max_tokens is not None:
        updates["max_tokens"] = options.max_tokens
    if options.temperature is not None:
        updates["temperature"] = options.temperature
    generation = base.model_copy(update=updates)
    defaults = DispatchOptions()
    dispatch = DispatchOptions(
        concurrency=options.concurrency or (preset.concurrency if preset else defaults.concurrency),
        max_attempts=options.max_attempts or defaults.max_attempts,
        timeout_s=options.timeout_s or defaults.timeout_s,
        rpm=options.rpm,
        tpm=options.tpm,
        output_tokens=generation.max_tokens,
    )
    if resolved is not None:
        adapter = create_adapter(
            resolved,
            AdapterOptions(
                generation=generation,
                seed=options.seed,
                base_url=options.base_url or (preset.base_url if preset else None),
                extra=merge_args(preset.extra if preset else {}, options.model_args),
                timeout_s=dispatch.timeout_s,
                text_only=True,
            ),
        )
    assert adapter is not None
    return adapter, preset, generation, dispatch


def judge_run(
    options: JudgeOptions, progress: ProgressHook | None = None, adapter: ModelAdapter | None = None
) -> JudgePassResult:
    """Have a judge read the run's answers (only what its store lacks), then re-score the run with it."""
    run = RunFolder(options.run)
    manifest = run.require_manifest()
    unknown = sorted(set(options.kinds) - set(KINDS))
    if unknown:
        raise ConfigError(f"unknown judge kind {unknown[0]!r}; kinds: {', '.join(KINDS)}")
    adapter, preset, generation, dispatch = resolve_judge(options, adapter)
    identity = identity_of(adapter, preset, generation, options)
    if (warning := retirement_warning(identity.retires, dt.date.today())) is not None:
        log.warning("%s", warning)
    with exclusive(run.path), disk_full_is_clear(run.path):
        answers = run.answers()
        judgements = judge_answers(answers, manifest.quirks)
        items = _items(answers, judgements, lambda prompt: request_key(adapter.info, generation, prompt))
        folder = run.write_judge_identity(identity)
        with ResponseStore(folder) as store:
            # Identical prompts (the same answer to the same question) are one request, read once for each case.
            wanted = {i.request.key: i.request for i in items if i.kind in options.kinds}
            pending = [request for key, request in wanted.items() if not store.answered(key)]
            reused = len(wanted) - len(pending)
            dispatcher = Dispatcher(adapter, dispatch)
            done = [reused]

            def stored(completions: list[Completion]) -> None:
                store.append(completions)
                done[0] += len(completions)
                if progress is not None:
                    stats = dispatcher.stats
                    progress(RunProgress(done[0], reused + len(pending), stats.retries, stats.infra_errors))

            async def go() -> None:
                try:
                    await dispatcher.run(pending, stored)
                finally:
                    await adapter.aclose()

            asyncio.run(go())
            readings = [_reading(item, store.get(item.request.key)) for item in items]
        kept = [r for r in readings if r is not None]
        run.write_judge_readings(identity.name, kept)
        run.set_active_judge(identity.name)
        summary, _ = score_folder(run.path)
    counts: dict[str, int] = {kind: sum(1 for i in items if i.kind == kind) for kind in options.kinds}
    return JudgePassResult(
        identity=identity,
        folder=folder,
        to_judge=counts,
        asked=dispatcher.stats.requests,
        reused=reused,
        failed=sum(1 for r in kept if r.status == "failed"),
        summary=summary,
    )


def _reading(item: _Item, completion: Completion | None) -> JudgeReading | None:
    """The reading of one item from the judge's store; None when the judge was never asked about it."""
    if completion is None:
        return None
    return read_reply(item.kind, item.meta, item.answer, completion)
