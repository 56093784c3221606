"""The OpenAI adapter: pure converters against goldens, then the real ``openai`` SDK against a local
OpenAI-compatible server (tests/openai_server.py) for every fault, through u2eval's real dispatcher,
runner and command line."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from openai_server import Fault, OpenAIServer, decode_data_url, image_parts
from PIL import Image
from wire_checks import assert_no_secret, case_images, completions, dispatch, judgements, request_for, sha

from model_adapters.openai import base_urls
from model_adapters.openai_convert import OpenAISettings, encode_request, from_response, to_request
from u2eval.data.image_cells import sniff_image_format
from u2eval.errors import AdapterError, ConfigError
from u2eval.models.protocol import AdapterOptions, ModelAdapter, ModelRequest
from u2eval.models.registry import create_adapter, list_presets, resolve_model
from u2eval.records import Completion, GenerationConfig, ImagePart, ImageSent, Prompt, TextPart, Usage
from u2eval.run.dispatch import Dispatcher
from u2eval.run.pacing import DispatchOptions
from u2eval.run.runner import RunOptions, run

KEY = "sk-fake-0123456789abcdefSECRET"
MODEL = "gpt-4o-2024-08-06"
FAST = DispatchOptions(concurrency=4, max_attempts=3, timeout_s=5.0, backoff_initial_s=0.01, backoff_max_s=0.05)


def _png(width: int = 6, height: int = 4) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 128).save(buffer, format="PNG")
    return buffer.getvalue()


PNG = _png()
PNG_URL = "data:image/png;base64," + base64.b64encode(PNG).decode()


def _prompt(system: str | None = None) -> Prompt:
    return Prompt("dd/21/0/x", system, (ImagePart(PNG, "image/png"), TextPart("Benign or malignant?")), "t", "")


@pytest.fixture
def make_server() -> Iterator[Callable[..., OpenAIServer]]:
    servers: list[OpenAIServer] = []

    def make(**kwargs: Any) -> OpenAIServer:
        server = OpenAIServer(api_key=KEY, models=(MODEL,), **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., OpenAIServer], monkeypatch: pytest.MonkeyPatch) -> OpenAIServer:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return make_server()


def _adapter(server: OpenAIServer, model: str = MODEL, **extra: Any) -> ModelAdapter:
    options = AdapterOptions(generation=GenerationConfig(seed=0), base_url=server.url, extra=extra, timeout_s=5.0)
    return create_adapter(resolve_model(f"openai/{model}"), options)


# -- pure converters ---------------------------------------------------------------------------------------


def test_to_request_is_the_chat_body_with_the_image_lossless_then_the_text() -> None:
    body = to_request(_prompt(system="You are a sonographer."), GenerationConfig(seed=7), MODEL)
    assert body == {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "You are a sonographer."},
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": f"data:image/png;base64,{base64.b64encode(PNG).decode()}"},
                    },
                    {"type": "text", "text": "Benign or malignant?"},
                ],
            },
        ],
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": 7,
        "max_tokens": 1024,
    }
    assert [m["role"] for m in to_request(_prompt(), GenerationConfig(), MODEL)["messages"]] == ["user"]


def test_preset_settings_shape_the_body_and_the_model_identity() -> None:
    settings = OpenAISettings(
        max_tokens_param="max_completion_tokens",
        omit=("temperature", "top_p", "seed"),
        image_detail="high",
        extra_body={"reasoning_effort": "low"},
    )
    body = to_request(_prompt(), GenerationConfig(seed=1, max_tokens=50), "gpt-5-2025-08-07", settings)
    assert {k: v for k, v in body.items() if k != "messages"} == {
        "model": "gpt-5-2025-08-07",
        "max_completion_tokens": 50,
        "reasoning_effort": "low",
    }
    assert body["messages"][0]["content"][0]["image_url"]["detail"] == "high"
    assert OpenAISettings().wire_identity() is None
    assert OpenAISettings(api_key_env="X", api_key_optional=True).wire_identity() is None  # no effect on answers
    assert settings.wire_identity() != OpenAISettings(image_detail="low").wire_identity()


def test_encoded_body_is_exactly_the_request_as_json() -> None:
    tricky = Prompt(
        "c",
        'a "system" \\ text',
        (ImagePart(PNG, "image/png"), TextPart('é \x00 \\u0000" \n'), ImagePart(b"\xff\xd8\xff", "image/jpeg")),
        "t",
        "",
    )
    for settings in (OpenAISettings(), OpenAISettings(image_detail="low", extra_body={"top_k": 1})):
        expected = to_request(tricky, GenerationConfig(seed=3), MODEL, settings)
        assert json.loads(encode_request(tricky, GenerationConfig(seed=3), MODEL, settings)) == expected


def _request() -> ModelRequest:
    from u2eval.records import Case

    case = Case("dd/21/0/x", "dd", "21", "21.x", "21.tsv", 0, "breast", "", "benign", (), PNG, "png")
    return ModelRequest(key="k", case=case, prompt=_prompt())


def _response(message: dict[str, Any] | None = None, finish: str = "stop", **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "message": message or {"role": "assistant", "content": "benign"}, "finish_reason": finish}
    body = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": MODEL, "choices": [choice]}
    body["usage"] = {"prompt_tokens": 800, "completion_tokens": 2, "total_tokens": 802}
    return body | extra


def test_from_response_reads_text_usage_and_the_image_sent() -> None:
    completion = from_response(_response(), _request())
    assert completion == Completion(
        case_id="dd/21/0/x",
        key="k",
        text="benign",
        finish_reason="stop",
        usage=Usage(input_tokens=800, output_tokens=2),
        image_sent=ImageSent(width=6, height=4, bytes=len(PNG), media_type="image/png"),
    )


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (_response({"role": "assistant", "content": None, "refusal": "I can't help with that."}), "refused"),
        (_response({"role": "assistant", "content": None}, finish="content_filter"), "refused"),
        (_response(choices=[]), "empty"),
        (_response({"role": "assistant", "content": ""}), "empty"),
        (_response({"role": "assistant", "content": "  \n"}), "empty"),
        (_response({"role": "assistant"}), "empty"),
    ],
)
def test_refusals_and_empty_answers_are_model_outcomes_not_infra_errors(raw: dict[str, Any], error: str) -> None:
    completion = from_response(raw, _request())
    assert completion.error == error and not completion.is_infra_error
    assert completion.usage is not None


def test_a_body_that_is_no_chat_completion_is_a_retryable_failure_not_an_answer() -> None:
    for raw in (["not", "an", "object"], {"choices": "nope"}, {"id": "x", "object": "chat.completion"}):
        with pytest.raises(AdapterError) as caught:
            from_response(raw, _request())
        assert caught.value.kind == "malformed" and caught.value.retryable
    with pytest.raises(AdapterError, match="upstream timed out") as caught:  # an error a proxy sent with 200
        from_response({"error": {"message": "upstream timed out", "type": "server_error"}}, _request())
    assert caught.value.kind == "server" and caught.value.retryable


def test_endpoints_keys_and_extras_are_checked_before_any_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert base_urls(None) == ["https://api.openai.com/v1"]
    assert base_urls(" http://a:8000/v1/, http://b:8000/v1") == ["http://a:8000/v1", "http://b:8000/v1"]
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env:1/v1")
    assert base_urls(None) == ["http://env:1/v1"]
    with pytest.raises(ConfigError, match="not an http"):
        base_urls("ftp://x/v1")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    resolved = resolve_model("openai/gpt-4o")
    with pytest.raises(ConfigError, match="set OPENAI_API_KEY"):
        create_adapter(resolved, AdapterOptions(base_url="https://api.openai.com/v1"))
    with pytest.raises(ConfigError, match="set DASHSCOPE_API_KEY"):
        extra = {"api_key_env": "DASHSCOPE_API_KEY"}
        create_adapter(resolved, AdapterOptions(base_url="https://x.example/v1", extra=extra))
    # A local server needs no key; a typo in the preset's extra is an error, not a silent default.
    assert create_adapter(resolved, AdapterOptions(base_url="http://127.0.0.1:8000/v1")).info.model == "gpt-4o"
    with pytest.raises(ConfigError, match="image_detial"):
        create_adapter(resolved, AdapterOptions(base_url="http://127.0.0.1:8000/v1", extra={"image_detial": "high"}))


# -- the real SDK at the wire ------------------------------------------------------------------------------


def test_a_run_sends_every_image_byte_for_byte_and_stores_the_answers(server: OpenAIServer, tmp_path: Path) -> None:
    result = run(RunOptions(model=f"openai/{MODEL}", base_url=server.url, tasks=("dd", "ll"), limit=1, out=tmp_path))
    images = case_images(("dd", "ll"), 1)
    sent = server.case_requests()
    assert result.infra_errors == 0 and len(sent) == len(images) == result.requested
    received = {}
    for request in sent:
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        body = request.body
        assert body["model"] == MODEL and body["temperature"] == 0.0 and body["max_tokens"] == 1024
        (part_image, part_text) = body["messages"][0]["content"]
        assert part_image["type"] == "image_url" and part_text["type"] == "text"
        media_type, data = decode_data_url(image_parts(body)[0])
        assert media_type == f"image/{sniff_image_format(data)}"  # the original encoding, as it was
        received[sha(data)] = data
    assert received == {sha(data): data for data in images.values()}  # every byte, no re-encoding
    stored = completions(tmp_path)
    assert {c.text for c in stored.values()} == {"benign"}
    assert all(c.image_sent is not None and c.image_sent.bytes == len(images[k]) for k, c in stored.items())
    assert all(c.usage is not None and c.usage.input_tokens for c in stored.values())


def test_retry_after_is_waited_exactly_in_seconds_and_in_milliseconds(server: OpenAIServer) -> None:
    server.add_fault(Fault("rate_limit", retry_after_s=0.4))
    server.add_fault(Fault("rate_limit", retry_after_ms=250, retry_after_s=9))  # retry-after-ms wins
    request = request_for(next(iter(case_images(("dd",), 1))))
    done = dispatch(_adapter(server), [request], FAST)
    assert done[0].text == "benign" and done[0].attempts == 3
    arrivals = [r.arrived for r in server.case_requests()]
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    assert 0.4 <= gaps[0] < 0.4 + 0.15  # never shorter than told, and not much longer
    assert 0.25 <= gaps[1] < 0.25 + 0.15


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (Fault("rate_limit"), "rate_limit"),
        (Fault("server_error"), "server"),
        (Fault("overloaded", retry_after_s=0.05), "server"),
        (Fault("drop"), "connection"),
        (Fault("malformed"), "malformed"),
        (Fault("hang", hang_s=5), "timeout"),
    ],
)
def test_a_transient_fault_is_retried_and_then_answered(server: OpenAIServer, fault: Fault, kind: str) -> None:
    server.add_fault(fault)
    request = request_for(next(iter(case_images(("dd",), 1))))
    dispatcher = Dispatcher(_adapter(server), DispatchOptions(max_attempts=3, timeout_s=0.5, backoff_initial_s=0.01))
    done: list[Completion] = []

    async def go() -> None:
        try:
            await dispatcher.run([request], done.extend)
        finally:
            await dispatcher.adapter.aclose()

    asyncio.run(go())
    assert done[0].text == "benign" and done[0].attempts == 2, done[0]
    assert dispatcher.stats.retries_by_kind == {kind: 1} and dispatcher.stats.retries == 1
    assert len(server.case_requests()) == 2


def test_faults_that_retrying_cannot_fix_are_not_retried(server: OpenAIServer) -> None:
    cases = list(case_images(("dd",), 1))[:3]
    for fault, case_id in zip(("bad_request", "insufficient_quota", "auth"), cases, strict=True):
        image = case_images(("dd",), 1)[case_id]
        server.add_fault(fault, when=lambda body, image=image: decode_data_url(image_parts(body)[0])[1] == image)
    done = {c.case_id: c for c in dispatch(_adapter(server), [request_for(c) for c in cases], FAST)}
    assert [done[c].error for c in cases] == ["bad_request", "rate_limit", "auth"]
    assert all(done[c].attempts == 1 and done[c].is_infra_error for c in cases)
    assert len(server.case_requests()) == 3


def test_persistent_faults_are_infra_errors_never_scored_and_the_next_run_completes_them(
    server: OpenAIServer, tmp_path: Path
) -> None:
    images = case_images(("dd", "ll"), 1)
    failing = set(list(images)[:3])
    failing_shas = {sha(images[c]) for c in failing}
    server.add_fault(
        Fault("overloaded", retry_after_s=0.01),
        times=None,
        when=lambda body: sha(decode_data_url(image_parts(body)[0])[1]) in failing_shas,
    )
    folder = tmp_path / "run"
    args = ("--tasks", "dd,ll", "--limit", "1", "--max-attempts", "2", "--out", str(folder))
    first = _cli("run", "--model", f"openai/{MODEL}", "--base-url", server.url, *args)
    assert first.returncode == 3, first.stderr
    judged = judgements(folder)
    assert {c for c, j in judged.items() if j.outcome == "infra_error"} == failing
    assert all(not j.strict.counted for c, j in judged.items() if c in failing)  # never scored
    summary = json.loads((folder / "summary.json").read_text())
    assert sorted(summary["infra_error_case_ids"]) == sorted(failing)
    assert len(server.case_requests()) == len(images) + len(failing)  # two attempts each for the failing
    server.clear_faults()
    before = len(server.case_requests())
    second = _cli("run", "--model", f"openai/{MODEL}", "--base-url", server.url, *args)
    assert second.returncode == 0, second.stderr
    assert len(server.case_requests()) - before == len(failing)  # only the failed ones are asked again
    assert all(j.outcome != "infra_error" for j in judgements(folder).values())
    assert assert_no_secret(folder, KEY) >= 5
    for output in (first, second):
        assert KEY not in output.stdout + output.stderr


def test_a_key_echoed_in_an_error_is_scrubbed_before_it_is_stored(server: OpenAIServer, tmp_path: Path) -> None:
    server.add_fault(Fault("bad_request", echo_auth=True), times=None)
    result = run(RunOptions(model=f"openai/{MODEL}", base_url=server.url, tasks=("ll",), limit=1, out=tmp_path))
    assert result.infra_errors > 0
    messages = [c.error_message or "" for c in completions(tmp_path).values()]
    assert all("Authorization: Bearer ***" in m for m in messages)
    assert_no_secret(tmp_path, KEY)


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "COLUMNS": "200", "OPENAI_API_KEY": KEY} | (env or {})
    return subprocess.run(
        [sys.executable, "-m", "u2eval", *args], capture_output=True, text=True, timeout=120, env=environment
    )


def test_preflight_stops_a_wrong_key_with_one_line_before_any_case(server: OpenAIServer, tmp_path: Path) -> None:
    wrong = "sk-wrong-key-000000000000"
    done = _cli(
        "run", "--model", f"openai/{MODEL}", "--base-url", server.url, "--tasks", "dd", "--limit", "1",
        "--out", str(tmp_path / "run"), env={"OPENAI_API_KEY": wrong},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "401" in done.stderr and "OPENAI_API_KEY" in done.stderr and wrong not in done.stderr
    assert server.case_requests() == []  # nothing spent


def test_preflight_stops_an_unknown_model_or_a_rejected_parameter(server: OpenAIServer, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist") as caught:
        run(RunOptions(model="openai/gpt-4o-nope", base_url=server.url, tasks=("dd",), limit=1, out=tmp_path / "a"))
    assert "\n" not in str(caught.value)
    server.add_fault("bad_request", probes=True)
    with pytest.raises(ConfigError, match="preflight call was refused"):
        run(RunOptions(model=f"openai/{MODEL}", base_url=server.url, tasks=("dd",), limit=1, out=tmp_path / "b"))
    assert server.case_requests() == []


def test_preflight_is_skipped_when_the_store_answers_everything(server: OpenAIServer, tmp_path: Path) -> None:
    options = RunOptions(model=f"openai/{MODEL}", base_url=server.url, tasks=("kd",), limit=1, out=tmp_path)
    run(options)
    count = len(server.requests)
    again = run(options)
    assert again.requested == 0 and len(server.requests) == count


def test_several_base_urls_share_the_cases(
    make_server: Callable[..., OpenAIServer], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    first, second = make_server(latency_s=0.02), make_server(latency_s=0.02)
    args = ("--tasks", "dd,ll", "--limit", "1", "--concurrency", "4", "--out", str(tmp_path))
    done = _cli("run", "--model", f"openai/{MODEL}", "--base-url", first.url, "--base-url", second.url, *args)
    assert done.returncode == 0, done.stderr
    counts = [len(first.case_requests()), len(second.case_requests())]
    cases = len(case_images(("dd", "ll"), 1))
    assert sum(counts) == cases and min(counts) >= cases // 4, counts  # both serve, roughly evenly
    assert all(len(s.requests) - len(s.case_requests()) == 1 for s in (first, second))  # each one preflighted


def test_requests_per_minute_are_limited(server: OpenAIServer) -> None:
    requests = [request_for(c) for c in list(case_images(("dd",), 1))[:8]]
    done = dispatch(_adapter(server), requests, DispatchOptions(concurrency=8, rpm=300))  # 5 a second, burst 5
    assert all(c.text == "benign" for c in done)
    arrivals = sorted(r.arrived for r in server.case_requests())
    # The bucket holds five: at most five cases go at once (four if the preflight's token is not back
    # yet), the others 0.2 s apart, so the last one at least 3 x 0.2 s after the first.
    assert 0.58 <= arrivals[-1] - arrivals[0] < 1.5


def test_openai_presets_name_exact_ids_their_endpoints_and_key_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    presets = {p.name: p for p in list_presets() if p.adapter == "openai"}
    assert {"gpt-4o", "gpt-4o-mini", "gpt-5", "qwen-max", "doubao-1.5-vision-pro-32k", "vllm-serve"} <= set(presets)
    expected = {
        "gpt-4o": ("gpt-4o-2024-08-06", "OPENAI_API_KEY", "https://api.openai.com/v1"),
        "gpt-4o-mini": ("gpt-4o-mini-2024-07-18", "OPENAI_API_KEY", "https://api.openai.com/v1"),
        "gpt-5": ("gpt-5-2025-08-07", "OPENAI_API_KEY", "https://api.openai.com/v1"),
        "qwen-max": ("qwen-max-2025-01-25", "DASHSCOPE_API_KEY", "https://dashscope.aliyuncs.com/compatible-mode/v1"),
        "doubao-1.5-vision-pro-32k": (
            "doubao-1-5-vision-pro-32k-250115",
            "ARK_API_KEY",
            "https://ark.cn-beijing.volces.com/api/v3",
        ),
    }
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    for name, (model, key_env, url) in expected.items():
        preset = presets[name]
        settings = OpenAISettings.model_validate(preset.extra)
        assert preset.model == model and settings.api_key_env == key_env and base_urls(preset.base_url) == [url]
        monkeypatch.delenv(key_env, raising=False)
        with pytest.raises(ConfigError, match=key_env):  # no key, no run
            create_adapter(resolve_model(name), AdapterOptions(base_url=preset.base_url, extra=preset.extra))
    gpt5 = presets["gpt-5"]
    body = to_request(_prompt(), gpt5.generation, gpt5.model, OpenAISettings.model_validate(gpt5.extra))
    assert body["max_completion_tokens"] == 8192 and not {"temperature", "top_p", "seed", "max_tokens"} & set(body)
    local = presets["vllm-serve"]
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    adapter = create_adapter(resolve_model("vllm-serve"), AdapterOptions(base_url=local.base_url, extra=local.extra))
    assert adapter.info.model == "Qwen/Qwen2.5-VL-7B-Instruct"  # a local server needs no key
