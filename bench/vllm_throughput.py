"""u2eval's throughput through the in-process vLLM adapter, against vLLM's own batched ``LLM.chat`` on the same
prompts with the same engine and sampling settings. Needs vLLM and a CUDA GPU.

    python bench/vllm_throughput.py --model qwen2.5-vl-7b [--data sample|DIR] [--tasks dd,ll] [--limit N] [--chunk N]

Each side runs in a fresh process (one engine on the GPU at a time), and each is timed after its engine is
built and warmed by one one-image conversation:

    u2eval  ``u2eval run`` of the cases through the preset's vllm adapter, in chunks of ``--chunk``; timed from
            the start of the run to the last answer stored (reading the TSVs, rendering, chunking and the store
            included): the manifest's ``answer_s``.
    vLLM    the same conversations, rendered and encoded before the clock starts, in ONE ``LLM.chat`` call.

Prints both in cases per second, u2eval's divided by vLLM's (target >= 0.9), and the share of identical
answers (greedy decoding, but batches differ, so a few may not be). Exits 2 with one line when vLLM or a GPU is
missing, 1 when the target is missed. For a figure that includes chunking, use the full synthetic set
(``python bench/make_full.py --out data/full``, then ``--data data/full``): the sample is one chunk.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TARGET = 0.9


def missing_prerequisite() -> str | None:
    """One line saying what this machine lacks, or None."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed: pip install 'u2eval[vllm]' on a machine with a CUDA GPU"
    try:
        import torch
    except ImportError:
        return "PyTorch is not importable (vLLM installs it): reinstall 'u2eval[vllm]'"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return None


def _settings(model: str, chunk: int | None) -> tuple[str, Any, Any]:
    """(model id, VLLMSettings, GenerationConfig) of a preset or ``vllm/<id>``."""
    from model_adapters._local import parse_settings
    from model_adapters.vllm import VLLMSettings
    from u2eval.errors import ConfigError
    from u2eval.models.registry import resolve_model
    from u2eval.records import GenerationConfig

    resolved = resolve_model(model)
    if resolved.adapter != "vllm":
        raise ConfigError(f"{model} is a {resolved.adapter} model; this benchmark takes a vllm preset or vllm/<id>")
    extra = dict(resolved.preset.extra) if resolved.preset else {}
    if chunk is not None:
        extra["chunk_size"] = chunk
    generation = resolved.preset.generation if resolved.preset else GenerationConfig()
    return resolved.model, parse_settings("vllm", extra, VLLMSettings), generation.model_copy(update={"seed": 0})


def phase_u2eval(args: argparse.Namespace) -> dict[str, Any]:
    from model_adapters.vllm import VLLMAdapter
    from u2eval.models.protocol import AdapterOptions
    from u2eval.run.folder import RunFolder
    from u2eval.run.runner import RunOptions, run
    from u2eval.run.store import ResponseStore

    model, settings, generation = _settings(args.model, args.chunk)
    adapter = VLLMAdapter(model, AdapterOptions(generation=generation, seed=0), settings)
    asyncio.run(adapter.preflight())  # builds the engine and warms it, before the clock
    out = Path(tempfile.mkdtemp(prefix="u2eval-vllm-bench-")) / "run"
    tasks = tuple(args.tasks.split(",")) if args.tasks else None
    options = RunOptions(model=args.model, data=args.data, tasks=tasks, limit=args.limit, out=out, concurrency=2)
    result = run(options, adapter=adapter)
    store = ResponseStore(out)
    answers: dict[str, str | None] = {}
    for run_case in RunFolder(out).cases():
        completion = store.get(run_case.key)
        answers[run_case.case.case_id] = completion.text if completion is not None else None
    return {
        "seconds": result.manifest.timings["answer_s"],
        "cases": result.manifest.n_cases,
        "infra_errors": result.infra_errors,
        "answers": answers,
    }


def phase_vllm(args: argparse.Namespace) -> dict[str, Any]:
    from model_adapters._local import PROBE_PNG, read_template
    from model_adapters.vllm import DEFAULT_ENGINE, sampling_kwargs, to_conversation, vllm_engine
    from u2eval.benchmark.prompts import PromptOptions, render
    from u2eval.benchmark.tasks import get_task, select_tasks
    from u2eval.data.reader import iter_cases
    from u2eval.data.sources import resolve_source
    from u2eval.records import ImagePart, Prompt, TextPart

    model, settings, generation = _settings(args.model, args.chunk)
    specs = select_tasks(tuple(args.tasks.split(",")) if args.tasks else None)
    source = resolve_source(args.data, tasks=specs)
    ids, conversations = [], []
    for case in iter_cases(source, specs, on_error=lambda e: None, limit=args.limit):
        conversation, _ = to_conversation(render(case, get_task(case.task), PromptOptions()), settings.image_budget)
        ids.append(case.case_id)
        conversations.append(conversation)
    engine = vllm_engine(model, dict(DEFAULT_ENGINE) | settings.engine, settings.lora)
    template = read_template(settings.chat_template)
    probe, _ = to_conversation(
        Prompt("probe", None, (ImagePart(PROBE_PNG, "image/png"), TextPart("Reply OK.")), "", "")
    )
    warm = engine.sampling_params(**sampling_kwargs(generation.model_copy(update={"max_tokens": 1})))
    engine.llm.chat([probe], warm, use_tqdm=False, lora_request=engine.lora_request, chat_template=template)
    params = engine.sampling_params(**sampling_kwargs(generation))
    started = time.perf_counter()
    outputs = engine.llm.chat(
        conversations, params, use_tqdm=False, lora_request=engine.lora_request, chat_template=template
    )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "cases": len(ids),
        "answers": {i: (o.outputs[0].text if o.outputs else None) for i, o in zip(ids, outputs, strict=True)},
    }


def _child(phase: str, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder:
        result = Path(folder) / "result.json"
        argv = [sys.executable, __file__, "--phase", phase, "--result", str(result), "--model", args.model]
        argv += ["--data", args.data] + (["--tasks", args.tasks] if args.tasks else [])
        argv += (["--limit", str(args.limit)] if args.limit else []) + (
            ["--chunk", str(args.chunk)] if args.chunk else []
        )
        subprocess.run(argv, check=True)
        loaded: dict[str, Any] = json.loads(result.read_text())
        return loaded


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-vl-7b", help="a vllm preset or vllm/<hf-id>")
    parser.add_argument("--data", default="sample", help="sample, or a folder in the U2-Bench layout")
    parser.add_argument("--tasks", default=None, help="comma list of task keys (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="at most N cases per source dataset")
    parser.add_argument("--chunk", type=int, default=None, help="the adapter's chunk size (default: the preset's)")
    parser.add_argument("--phase", choices=("u2eval", "vllm"), help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    problem = missing_prerequisite()
    if problem is not None:
        print(f"bench/vllm_throughput.py cannot run here: {problem}", file=sys.stderr)
        return 2
    if args.phase is not None:
        figures = phase_u2eval(args) if args.phase == "u2eval" else phase_vllm(args)
        args.result.write_text(json.dumps(figures))
        return 0
    ours, theirs = _child("u2eval", args), _child("vllm", args)
    ours_rate, theirs_rate = ours["cases"] / ours["seconds"], theirs["cases"] / theirs["seconds"]
    same = sum(1 for k, v in theirs["answers"].items() if ours["answers"].get(k) == v)
    ratio = ours_rate / theirs_rate
    print(f"model {args.model}, data {args.data}, {ours['cases']} cases ({ours['infra_errors']} infra errors)")
    print(f"u2eval (vllm adapter, chunks):  {ours['seconds']:8.1f} s  {ours_rate:8.2f} cases/s")
    print(f"vLLM LLM.chat, one call:        {theirs['seconds']:8.1f} s  {theirs_rate:8.2f} cases/s")
    print(f"identical answers: {same}/{len(theirs['answers'])}")
    print(f"u2eval / vLLM throughput = {ratio:.3f} (target >= {TARGET})")
    print("PASS" if ratio >= TARGET else "FAIL")
    return 0 if ratio >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
