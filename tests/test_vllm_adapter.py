"""The in-process vLLM adapter, exactly around the engine: its pure converters, then whole runs of the bundled
sample through u2eval's real runner, dispatcher and store with a stand-in engine that has ``LLM.chat``'s
signature and vLLM's output types (tests/vllm_standin.py). vLLM itself needs a GPU and is never imported."""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from vllm_standin import (
    MODEL,
    CompletionOutput,
    RequestOutput,
    StandinFactory,
    decode_conversation,
    standin_adapter,
    standin_run,
)
from wire_checks import completions, request_for

from model_adapters._local import PROBE_PNG, EngineThread, parse_settings
from model_adapters.vllm import VLLMAdapter, VLLMSettings, from_output, sampling_kwargs, to_conversation
from u2eval.errors import ConfigError
from u2eval.models.images import ImageBudget
from u2eval.models.protocol import AdapterOptions, ModelRequest
from u2eval.models.registry import create_adapter, list_presets, resolve_model
from u2eval.records import GenerationConfig, ImagePart, Prompt, TextPart, Usage
from u2eval.run.folder import RunFolder
from u2eval.run.runner import RunOptions, run

CASE = "ll/04/0/14e6a24e"  # a 112x82 grayscale PNG of the bundled sample
N_SAMPLE = 200  # cases in the bundled sample


def _chunk_sizes(factory: StandinFactory) -> list[int]:
    """Conversations per LLM.chat call, the preflight's one-conversation probe left out."""
    calls = factory.llm.calls
    assert calls[0][0] == 1 and calls[0][1].max_tokens == 1  # the preflight comes first
    return [size for size, *_ in calls[1:]]


# -- pure converters ---------------------------------------------------------------------------------------


def test_a_case_becomes_exactly_this_conversation_with_the_image_bytes_unchanged() -> None:
    request = request_for(CASE)
    conversation, sent = to_conversation(request.prompt)
    image = request.case.image
    url = "data:image/png;base64," + base64.b64encode(image).decode()
    assert conversation == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": request.prompt.text},
            ],
        }
    ]
    decoded = decode_conversation(conversation)
    assert decoded.images == [("image/png", image)]  # lossless: the dataset's own bytes and encoding
    assert sent is not None and (sent.width, sent.height, sent.bytes, sent.resized) == (112, 82, len(image), False)
    json.dumps(conversation)  # plain JSON: what vLLM's chat parser (and Ray Data) take


def test_a_system_text_goes_first_and_a_budget_resizes_and_is_recorded() -> None:
    prompt = Prompt(
        "x", "You are a radiologist.", (ImagePart(request_for(CASE).case.image, "image/png"), TextPart("q")), "t", ""
    )
    conversation, sent = to_conversation(prompt, ImageBudget(max_long_edge=56))
    assert conversation[0] == {"role": "system", "content": "You are a radiologist."}
    (media_type, data), *_ = decode_conversation(conversation).images
    with Image.open(io.BytesIO(data)) as img:
        assert img.size == (56, 41) and media_type == "image/png"  # PNG stays PNG
    assert sent is not None and sent.resized and (sent.width, sent.height, sent.bytes) == (56, 41, len(data))


def test_sampling_params_come_from_the_generation_settings() -> None:
    config = GenerationConfig(temperature=0.2, top_p=0.9, max_tokens=77, seed=5)
    assert sampling_kwargs(config) == {"temperature": 0.2, "top_p": 0.9, "max_tokens": 77, "seed": 5}


def _output(text: str, finish: str | None = "stop", tokens: int = 3) -> RequestOutput:
    return RequestOutput(
        "0", None, list(range(70)), None, [CompletionOutput(0, text, list(range(tokens)), None, None, finish)], True
    )


def test_a_request_output_becomes_a_completion() -> None:
    request = request_for(CASE)
    done = from_output(_output("upper left"), request, latency_s=0.25)
    assert (done.case_id, done.key, done.text, done.error, done.finish_reason) == (
        CASE,
        request.key,
        "upper left",
        None,
        "stop",
    )
    assert done.usage == Usage(input_tokens=70, output_tokens=3) and done.latency_s == 0.25
    cut = from_output(_output("the lesion is in the upper", "length", 1024), request)
    assert cut.text == "the lesion is in the upper" and cut.finish_reason == "length" and cut.error is None
    assert from_output(_output("  \n"), request).error == "empty"
    assert from_output(_output("partial", "abort"), request).error == "server"  # the engine dropped it
    assert from_output(RequestOutput("0", None, None, None, [], True), request).error == "empty"


# -- whole runs through the runner ---------------------------------------------------------------------------


def test_chunks_are_chat_calls_of_the_chunk_size_with_the_run_settings(tmp_path: Path) -> None:
    seven, whole = StandinFactory(), StandinFactory()
    result = standin_run(tmp_path / "7", seven, chunk=7)
    assert result.requested == N_SAMPLE and result.infra_errors == 0
    assert _chunk_sizes(seven) == [7] * 28 + [4]
    standin_run(tmp_path / "256", whole, chunk=256)
    assert _chunk_sizes(whole) == [N_SAMPLE]
    _, params, template, lora = whole.llm.calls[1]
    assert (params.temperature, params.top_p, params.max_tokens, params.seed) == (0.0, 1.0, 1024, 0)
    assert template is None and lora is None  # the model's own chat template; no LoRA
    assert whole.llm.engine_args == {"dtype": "bfloat16", "limit_mm_per_prompt": {"image": 1}}


def test_scores_are_identical_for_chunks_of_1_7_and_256(tmp_path: Path) -> None:
    summaries = []
    for chunk in (1, 7, 256):
        factory = StandinFactory()
        result = standin_run(tmp_path / str(chunk), factory, chunk=chunk)
        assert result.infra_errors == 0 and len(_chunk_sizes(factory)) == -(-N_SAMPLE // chunk)
        summaries.append((tmp_path / str(chunk) / "summary.json").read_bytes())
    assert summaries[0] == summaries[1] == summaries[2]
    stored = completions(tmp_path / "7")
    assert len(stored) == N_SAMPLE and all(c.usage is not None and c.usage.input_tokens for c in stored.values())


def test_a_crash_mid_chunk_keeps_the_chunks_before_it_and_the_rerun_asks_only_the_rest(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    # The process dies (as under kill -9) on the 4th conversation of the third chunk of 7; the probe is first.
    crash = (
        "from pathlib import Path; from vllm_standin import StandinFactory, standin_run; "
        f"standin_run(Path({str(folder)!r}), StandinFactory({{'fail_at': 1 + 14 + 3, 'exit_code': 137, "
        "'fail_delay_s': 0.3}), chunk=7)"
    )
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")])}
    died = subprocess.run([sys.executable, "-c", crash], env=env, capture_output=True, text=True, timeout=120)
    assert died.returncode == 137, died.stderr[-2000:]
    stored = completions(folder)
    assert len(stored) == 14 and all(c.text and c.error is None for c in stored.values())  # two whole chunks
    before = (folder / "responses.jsonl").read_text()
    resumed = StandinFactory()
    result = standin_run(folder, resumed, chunk=7)
    assert result.requested == N_SAMPLE - 14 and result.reused == 14 and result.infra_errors == 0
    assert sum(_chunk_sizes(resumed)) == N_SAMPLE - 14  # only the missing cases reach the engine
    assert (folder / "responses.jsonl").read_text().startswith(before)  # the stored answers stay as they were
    clean = standin_run(tmp_path / "clean", StandinFactory(), chunk=7)
    assert result.summary == clean.summary
    assert (folder / "summary.json").read_bytes() == (tmp_path / "clean" / "summary.json").read_bytes()


def test_an_engine_failure_makes_infra_errors_of_its_chunks_and_the_next_run_completes_them(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    dead = StandinFactory({"fail_at": 1 + 60})  # the engine dies in the second chunk of 50 and stays dead
    first = standin_run(folder, dead, chunk=50)
    assert first.infra_errors == N_SAMPLE - 50
    failed = [c for c in completions(folder).values() if c.error is not None]
    assert {c.error for c in failed} == {"server"} and "vLLM failed: CUDA error" in (failed[0].error_message or "")
    healed = StandinFactory()
    second = standin_run(folder, healed, chunk=50)
    assert second.requested == N_SAMPLE - 50 and second.infra_errors == 0
    assert sum(_chunk_sizes(healed)) == N_SAMPLE - 50


def test_a_conversation_vllm_refuses_fails_alone_and_the_rest_of_its_chunk_is_answered(tmp_path: Path) -> None:
    target = request_for(CASE).case.image
    factory = StandinFactory({"reject": lambda read: any(data == target for _, data in read.images)})
    result = standin_run(tmp_path / "run", factory, chunk=256, tasks=("ll", "dd"))
    stored = completions(tmp_path / "run")
    refused = stored[CASE]
    assert refused.error == "bad_request" and "maximum model length" in (refused.error_message or "")
    assert result.infra_errors == 1 and all(c.text for k, c in stored.items() if k != CASE)
    assert len(factory.llm.calls) < 2 * 10  # halving: about two calls per level, not one per case


def test_an_unreadable_image_is_a_bad_request_and_never_reaches_the_engine() -> None:
    factory = StandinFactory()
    adapter = standin_adapter(factory)
    good = request_for(CASE)
    bad = ModelRequest(
        "bad-key", good.case, Prompt(CASE, None, (ImagePart(b"not an image", "image/png"), TextPart("q")), "t", "")
    )

    async def go() -> list[Any]:
        try:
            return await adapter.generate([bad, good])
        finally:
            await adapter.aclose()

    by_key = {c.key: c for c in asyncio.run(go())}
    assert by_key["bad-key"].error == "bad_request" and "unreadable image" in (by_key["bad-key"].error_message or "")
    assert by_key[good.key].text and factory.llm.calls[0][0] == 1


def test_a_timed_out_chunk_is_waited_for_again_not_asked_twice(tmp_path: Path) -> None:
    factory = StandinFactory({"delay_s": 0.3})
    result = standin_run(tmp_path / "run", factory, chunk=256, tasks=("dd",), timeout_s=0.1, max_attempts=6)
    assert result.infra_errors == 0 and result.manifest.dispatch["retries"] >= 2
    assert [size for size, *_ in factory.llm.calls] == [1, result.requested]  # one probe, one chunk: no repeats


def test_the_engine_thread_reattaches_a_retry_to_the_running_job() -> None:
    ran: list[str] = []

    def slow(prepared: str) -> str:
        time.sleep(0.2)
        ran.append(prepared)
        return "first"

    async def go() -> str:
        thread = EngineThread("test")
        try:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(thread.run(("a",), lambda: "input", slow), timeout=0.05)
            return await thread.run(("a",), lambda: "other input", lambda _: "second")
        finally:
            thread.close()

    assert asyncio.run(go()) == "first" and ran == ["input"]


# -- preflight, identity, presets, install -------------------------------------------------------------------


def test_preflight_stops_an_engine_that_cannot_start_or_cannot_take_an_image(tmp_path: Path) -> None:
    def broken(model: str, engine_args: dict[str, Any], lora: Any) -> Any:
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    adapter = VLLMAdapter(MODEL, AdapterOptions(), VLLMSettings(), engine_factory=broken)
    with pytest.raises(ConfigError, match="engine did not start: CUDA out of memory"):
        run(RunOptions(model=f"vllm/{MODEL}", out=tmp_path / "a", tasks=("dd",), limit=1), adapter=adapter)
    blind = StandinFactory({"reject": lambda read: bool(read.images)})
    with pytest.raises(ConfigError, match="one-image test conversation failed"):
        standin_run(tmp_path / "b", blind, tasks=("dd",), limit=1)
    assert decode_conversation(to_conversation(Prompt("p", None, (ImagePart(PROBE_PNG, "image/png"),), "", ""))[0])


def test_the_identity_changes_with_what_changes_answers_and_not_with_speed(tmp_path: Path) -> None:
    def revision(model: str = MODEL, **extra: Any) -> str:
        adapter = VLLMAdapter(
            model, AdapterOptions(), parse_settings("vllm", extra, VLLMSettings), engine_factory=StandinFactory()
        )
        assert adapter.info.adapter == "vllm" and adapter.info.model == model
        return adapter.info.revision or ""

    base = revision(engine={"dtype": "bfloat16", "mm_processor_kwargs": {"max_pixels": 1003520}})
    assert base.startswith("unpinned;engine-")
    same = revision(
        chunk_size=7,
        engine={
            "dtype": "bfloat16",
            "mm_processor_kwargs": {"max_pixels": 1003520},
            "tensor_parallel_size": 4,
            "gpu_memory_utilization": 0.8,
            "max_model_len": 4096,
        },
    )
    assert same == base
    template = tmp_path / "template.jinja"
    template.write_text("{{ messages }}")
    different = [
        revision(engine={"dtype": "float16", "mm_processor_kwargs": {"max_pixels": 1003520}}),
        revision(engine={"dtype": "bfloat16", "mm_processor_kwargs": {"max_pixels": 200704}}),
        revision(
            engine={"dtype": "bfloat16", "mm_processor_kwargs": {"max_pixels": 1003520}}, chat_template=str(template)
        ),
        revision(
            engine={"dtype": "bfloat16", "mm_processor_kwargs": {"max_pixels": 1003520}},
            image_budget={"max_pixels": 10},
        ),
    ]
    assert len({base, *different}) == 5
    assert revision(engine={"revision": "abc123"}).startswith("rev=abc123;")
    assert revision(str(tmp_path)).startswith(f"local={tmp_path.resolve()};")


def test_a_preset_chat_template_and_lora_reach_every_call(tmp_path: Path) -> None:
    template = tmp_path / "chat.jinja"
    template.write_text("{% for m in messages %}{{ m.content }}{% endfor %}")
    factory = StandinFactory()
    adapter = standin_adapter(factory, chat_template=str(template), lora={"subfolder": "vision-lora"})
    run(RunOptions(model=f"vllm/{MODEL}", out=tmp_path / "run", tasks=("dd",), limit=1), adapter=adapter)
    assert {(t, lora) for _, _, t, lora in factory.llm.calls} == {
        (template.read_text(), ("lora", "vision", "vision-lora"))
    }


def test_bad_settings_and_a_missing_template_are_one_line_config_errors() -> None:
    with pytest.raises(ConfigError, match="vllm: invalid preset extra: chunk_sise: Extra inputs"):
        parse_settings("vllm", {"chunk_sise": 7}, VLLMSettings)
    with pytest.raises(ConfigError, match="chunk_size: Input should be greater than or equal to 1"):
        parse_settings("vllm", {"chunk_size": 0}, VLLMSettings)
    with pytest.raises(ConfigError, match="chat_template 'nosuch.jinja': no such file"):
        VLLMAdapter(
            MODEL, AdapterOptions(), VLLMSettings(chat_template="nosuch.jinja"), engine_factory=StandinFactory()
        )
    with pytest.raises(ConfigError, match="vllm needs a model"):
        VLLMAdapter("", AdapterOptions(), VLLMSettings(), engine_factory=StandinFactory())


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_without_vllm_the_adapter_says_which_extra_to_install() -> None:
    with pytest.raises(
        ConfigError, match=r"adapter 'vllm' cannot be loaded \(vllm missing\): pip install 'u2eval\[vllm\]'"
    ):
        create_adapter(resolve_model("vllm/Qwen/Qwen2.5-VL-7B-Instruct"), AdapterOptions())
    with pytest.raises(ConfigError, match="pip install 'u2eval\\[vllm\\]'"):
        create_adapter(resolve_model("qwen2.5-vl-7b"), AdapterOptions())


def test_every_open_model_preset_is_valid_and_distinct() -> None:
    presets = [p for p in list_presets() if p.adapter in ("vllm", "ray-vllm")]
    models = {p.model for p in presets if p.adapter == "vllm"}
    assert {
        "Qwen/Qwen2.5-VL-3B-Instruct",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "Qwen/Qwen2.5-VL-32B-Instruct",
        "Qwen/Qwen2.5-VL-72B-Instruct",
        "OpenGVLab/InternVL3-9B",
        "deepseek-ai/deepseek-vl2",
        "llava-hf/llava-1.5-13b-hf",
        "microsoft/Phi-4-multimodal-instruct",
        "mistralai/Mistral-Small-3.1-24B-Instruct-2503",
        "google/medgemma-4b-it",
        "lingshu-medical-mllm/Lingshu-7B",
    } <= models
    identities = set()
    for preset in presets:
        assert resolve_model(preset.name).preset == preset
        assert "Known" in preset.description and "Chosen" in preset.description, preset.name
        if preset.adapter != "vllm":
            continue
        settings = parse_settings("vllm", preset.extra, VLLMSettings)
        assert settings.chunk_size >= 256 and preset.generation.temperature == 0.0
        adapter = VLLMAdapter(preset.model, AdapterOptions(), settings, engine_factory=StandinFactory())
        identities.add((adapter.info.model, adapter.info.revision))
    assert len(identities) == len([p for p in presets if p.adapter == "vllm"])


def test_cases_of_a_run_keep_their_keys_whatever_the_chunk(tmp_path: Path) -> None:
    standin_run(tmp_path / "a", StandinFactory(), chunk=1, tasks=("kd",))
    standin_run(tmp_path / "b", StandinFactory(), chunk=256, tasks=("kd",))
    assert [c.key for c in RunFolder(tmp_path / "a").cases()] == [c.key for c in RunFolder(tmp_path / "b").cases()]
