"""The Ray Data path: its pure converters, the processor configuration it builds for the installed Ray, and
whole runs through u2eval's runner with Ray running locally on the CPU and a stand-in for the vLLM stage (the
same stand-in model as tests/vllm_standin.py). Skipped only when ray is not installed."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")  # binds ray.data on the ray module
from vllm_standin import StandinFactory, answer, decode_conversation, standin_run  # noqa: E402
from wire_checks import completions, request_for  # noqa: E402

from model_adapters._local import parse_settings  # noqa: E402
from model_adapters.ray_vllm import (  # noqa: E402
    RayVLLMAdapter,
    RayVLLMSettings,
    create,
    from_row,
    postprocess,
    preprocess,
    processor_config,
    to_row,
    vllm_stage,
)
from model_adapters.vllm import to_conversation  # noqa: E402
from u2eval.errors import ConfigError  # noqa: E402
from u2eval.models.images import ImageBudget  # noqa: E402
from u2eval.models.protocol import AdapterOptions  # noqa: E402
from u2eval.records import GenerationConfig, ImageSent, Usage  # noqa: E402
from u2eval.run.runner import RunOptions, RunResult, run  # noqa: E402

MODEL = "standin/vlm-7b"
CASE = "ll/04/0/14e6a24e"
TASKS = ("dd", "ll")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """One small local Ray for the module (starting one takes seconds); workers import the test helpers."""
    tests = str(Path(__file__).parent)
    paths = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": paths}})
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield
    ray.shutdown()


def _plain(value: Any) -> Any:
    """Arrow hands nested lists back as numpy arrays (Ray's own stages convert them the same way)."""
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class StandinStage:
    """A Ray Data UDF standing in for the vLLM processor's stages, on its actor pool: ``preprocess`` merged into
    the row (as Ray's wrapper does), the messages read as vLLM's chat parser would and answered like
    tests/vllm_standin.py's model, then ``postprocess``. The conversation whose image has the sha256 ``refuse``
    fails as Ray's engine stage reports a row error under ``should_continue_on_error`` (bypassing postprocess)."""

    def __init__(self, refuse: str | None = None) -> None:
        self.refuse = refuse

    def __call__(self, row: dict[str, Any]) -> dict[str, Any]:
        row = row | preprocess(row)
        read = decode_conversation(_plain(row["messages"]))
        params = _plain(row["sampling_params"])
        if any(hashlib.sha256(data).hexdigest() == self.refuse for _, data in read.images):
            error = "ValueError: The decoder prompt (length 9000) is longer than the maximum model length of 8192."
            return row | {
                "__inference_error__": error,
                "generated_text": "",
                "num_input_tokens": 0,
                "num_generated_tokens": 0,
            }
        words = answer(read).split(" ")[: params["max_tokens"]]
        output = {
            "generated_text": " ".join(words),
            "num_input_tokens": len(read.text.split()) + 64 * len(read.images),
            "num_generated_tokens": len(words),
        }
        return postprocess(row | output) | {"__inference_error__": ""}


def standin_stage_factory(refuse: str | None = None, built: list[tuple[str, int]] | None = None) -> Any:
    """A stage factory shaped like ``vllm_stage``: Dataset -> Dataset, on an actor pool of ``replicas``."""

    def factory(model: str, settings: RayVLLMSettings, chat_template: str | None) -> Any:
        if built is not None:
            built.append((model, settings.replicas))

        def stage(dataset: Any) -> Any:
            pool = ray.data.ActorPoolStrategy(size=settings.replicas)
            return dataset.map(StandinStage, fn_constructor_kwargs={"refuse": refuse}, compute=pool)

        return stage

    return factory


def _ray_run(folder: Path, factory: Any, chunk: int = 4096, **options: Any) -> RunResult:
    settings = parse_settings(
        "ray-vllm", {"chunk_size": chunk, "replicas": 1, "engine": {"dtype": "bfloat16"}}, RayVLLMSettings
    )
    adapter = RayVLLMAdapter(
        MODEL, AdapterOptions(generation=GenerationConfig(seed=0)), settings, stage_factory=factory
    )
    return run(RunOptions(model=f"ray-vllm/{MODEL}", out=folder, tasks=TASKS, limit=2, **options), adapter=adapter)


# -- pure converters ---------------------------------------------------------------------------------------


def test_a_row_carries_the_same_conversation_as_the_in_process_adapter() -> None:
    request = request_for(CASE)
    row = to_row(request, GenerationConfig(temperature=0.0, max_tokens=64, seed=1))
    conversation, sent = to_conversation(request.prompt)
    assert json.loads(row["conversation"]) == conversation and isinstance(row["conversation"], str)
    assert row["key"] == request.key and row["case_id"] == CASE and row["max_tokens"] == 64
    assert row["sampling_params"] == {"temperature": 0.0, "top_p": 1.0, "max_tokens": 64, "seed": 1}
    assert "seed" not in to_row(request)["sampling_params"]  # no seed: left to vLLM, not sent as null
    assert ImageSent.model_validate_json(row["image_sent"]) == sent
    assert preprocess(row) == {"messages": conversation, "sampling_params": row["sampling_params"]}
    small = to_row(request, budget=ImageBudget(max_long_edge=20))
    assert ImageSent.model_validate_json(small["image_sent"]).resized


def test_an_output_row_becomes_a_completion() -> None:
    row = {"key": "k", "case_id": CASE, "image_sent": "", "max_tokens": 8, "prompt": "...", "messages": []}
    answered = postprocess(row | {"generated_text": "upper left", "num_input_tokens": 90, "num_generated_tokens": 2})
    assert set(answered) == {
        "key",
        "case_id",
        "image_sent",
        "max_tokens",
        "generated_text",
        "num_input_tokens",
        "num_generated_tokens",
    }
    done = from_row(answered, 0.5)
    assert (done.key, done.case_id, done.text, done.finish_reason, done.latency_s) == (
        "k",
        CASE,
        "upper left",
        "stop",
        0.5,
    )
    assert done.usage == Usage(input_tokens=90, output_tokens=2) and done.error is None
    cut = from_row(answered | {"num_generated_tokens": 8})
    assert cut.finish_reason == "length" and cut.text == "upper left"
    assert from_row(answered | {"generated_text": " "}).error == "empty"
    refused = from_row(row | {"__inference_error__": "ValueError: prompt too long"})
    assert refused.error == "bad_request" and refused.error_message == "ValueError: prompt too long"
    assert from_row(row | {"__inference_error__": "RuntimeError: engine died"}).error == "server"


def test_the_processor_config_is_rays_own_with_images_on() -> None:
    pytest.importorskip("ray.data.llm")  # it needs more than ray[data] (aiohttp, ...), though not vllm
    settings = RayVLLMSettings(
        replicas=4,
        batch_size=32,
        engine={"trust_remote_code": True, "tensor_parallel_size": 2},
        accelerator_type="H100",
    )
    config = processor_config("OpenGVLab/InternVL3-9B", settings, "{{ messages }}")
    assert type(config).__name__ == "vLLMEngineProcessorConfig"
    assert config.model_source == "OpenGVLab/InternVL3-9B" and config.concurrency == 4 and config.batch_size == 32
    assert (
        config.engine_kwargs["limit_mm_per_prompt"] == {"image": 1}
        and config.engine_kwargs["tensor_parallel_size"] == 2
    )
    assert config.accelerator_type == "H100" and config.should_continue_on_error
    if "prepare_multimodal_stage" in type(config).model_fields:
        assert config.prepare_multimodal_stage["enabled"]
        assert config.prepare_multimodal_stage["model_config_kwargs"] == {"trust_remote_code": True}
        assert config.chat_template_stage == {"enabled": True, "chat_template": "{{ messages }}"}
    else:
        assert config.has_image


@pytest.mark.skipif(importlib.util.find_spec("transformers") is not None, reason="ray[llm]'s dependencies are here")
def test_without_ray_llm_the_real_stage_says_which_extra_to_install() -> None:
    pytest.importorskip("ray.data.llm")
    with pytest.raises(
        ConfigError, match=r"processor cannot be loaded \(transformers missing\): pip install 'u2eval\[ray\]'"
    ):
        vllm_stage(MODEL, RayVLLMSettings(), None)


def test_settings_are_checked_and_the_identity_is_its_own(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ray-vllm: invalid preset extra: replica: Extra inputs"):
        create(MODEL, AdapterOptions(extra={"replica": 2}))
    adapter = create(MODEL, AdapterOptions(extra={"chunk_size": 512, "engine": {"dtype": "bfloat16"}}))
    assert adapter.max_batch_size == 512 and adapter.info.adapter == "ray-vllm"
    assert (
        adapter.info.revision
        == RayVLLMAdapter(
            MODEL, AdapterOptions(), RayVLLMSettings(engine={"dtype": "bfloat16", "tensor_parallel_size": 8})
        ).info.revision
    )


# -- through Ray -------------------------------------------------------------------------------------------


def test_answers_come_back_through_ray_data_into_the_store(local_ray: None, tmp_path: Path) -> None:
    built: list[tuple[str, int]] = []
    result = _ray_run(tmp_path / "ray", standin_stage_factory(built=built))
    assert result.infra_errors == 0 and result.requested == result.manifest.n_cases > 0
    assert built == [(MODEL, 1)]  # the processor is built once, in the preflight
    stored = completions(tmp_path / "ray")
    assert len(stored) == result.manifest.n_cases and all(c.text and c.usage for c in stored.values())
    assert stored[CASE].image_sent is not None and stored[CASE].image_sent.width == 112
    # The same stand-in model in-process: the same answers, so the same scores, byte for byte.
    standin_run(tmp_path / "vllm", StandinFactory(), tasks=TASKS, limit=2)
    assert (tmp_path / "ray" / "summary.json").read_bytes() == (tmp_path / "vllm" / "summary.json").read_bytes()
    again = _ray_run(tmp_path / "ray", standin_stage_factory())
    assert again.requested == 0 and again.reused == result.manifest.n_cases  # resume: no job at all


def test_a_refused_row_is_its_cases_error_and_the_next_run_asks_only_it(local_ray: None, tmp_path: Path) -> None:
    target = hashlib.sha256(request_for(CASE).case.image).hexdigest()
    first = _ray_run(tmp_path / "run", standin_stage_factory(refuse=target))
    stored = completions(tmp_path / "run")
    assert first.infra_errors == 1 and stored[CASE].error == "bad_request"
    assert "longer than the maximum model length" in (stored[CASE].error_message or "")
    assert all(c.text for k, c in stored.items() if k != CASE)
    second = _ray_run(tmp_path / "run", standin_stage_factory())
    assert second.requested == 1 and second.infra_errors == 0 and completions(tmp_path / "run")[CASE].text
