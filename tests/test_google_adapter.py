"""The Google adapter: pure converters against goldens, then the real ``google-genai`` SDK against a local
Gemini API stand-in (tests/google_server.py) through u2eval's real dispatcher and runner."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.genai import _api_client, types
from google_server import GoogleServer, b64decode, sent_images
from wire_checks import (
    assert_no_secret,
    case_images,
    completions,
    dispatch,
    judgements,
    manifest,
    request_for,
    sha,
)
from wire_server import Fault

from model_adapters import google as adapter_module
from model_adapters.google import GoogleAdapter, from_response, request_json, to_request
from u2eval.errors import AdapterError, ConfigError
from u2eval.models.images import ImageBudget, image_size
from u2eval.models.protocol import AdapterOptions
from u2eval.models.registry import create_adapter, list_presets, resolve_model
from u2eval.records import GenerationConfig, ImagePart, Prompt, TextPart
from u2eval.run.pacing import DispatchOptions
from u2eval.run.runner import RunOptions, RunResult, run

KEY = "AIzaSy-u2eval-TEST-KEY-do-not-log-0123456789"
TASKS = ("dd", "ll")
PNG = case_images(("ll",), 1)["ll/04/0/14e6a24e"]  # 112x82 grayscale PNG from the bundled sample
# The SDK sends through aiohttp when it is installed, else httpx2: the transport-level faults run on both.
TRANSPORTS = ["httpx2"] + (["aiohttp"] if importlib.util.find_spec("aiohttp") else [])


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[GoogleServer]:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    for name in ("GOOGLE_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_GENAI_USE_VERTEXAI", "GOOGLE_GENAI_API_VERSION"):
        monkeypatch.delenv(name, raising=False)
    stand_in = GoogleServer(KEY, hang_s=2.0)
    with stand_in.running():
        yield stand_in


def _run(server: GoogleServer, out: Path) -> RunResult:
    return run(RunOptions(model="google/gemini-test", base_url=server.url, tasks=TASKS, limit=1, out=out))


# -- pure converters ---------------------------------------------------------------------------------


def test_to_request_is_inline_image_then_text_with_the_generation_config() -> None:
    prompt = Prompt("c1", "You are a sonographer.", (ImagePart(PNG, "image/png"), TextPart("Which organ?")), "t", "")
    config = GenerationConfig(temperature=0.0, top_p=1.0, max_tokens=256, seed=7)
    wire = to_request(prompt, config, "gemini-test", thinking_budget=128)
    view = request_json(wire)
    image = view["contents"][0]["parts"][0]["inline_data"]
    assert b64decode(image.pop("data")) == PNG  # lossless, byte for byte
    assert view == {
        "model": "gemini-test",
        "contents": [
            {"role": "user", "parts": [{"inline_data": {"mime_type": "image/png"}}, {"text": "Which organ?"}]}
        ],
        "config": {
            "system_instruction": "You are a sonographer.",
            "temperature": 0.0,
            "top_p": 1.0,
            "max_output_tokens": 256,
            "seed": 7,
            "thinking_config": {"thinking_budget": 128},
        },
    }
    assert wire.image_sent is not None and not wire.image_sent.resized and wire.image_sent.bytes == len(PNG)
    bare = request_json(to_request(Prompt("c", None, (TextPart("Q"),), "t", ""), GenerationConfig(), "m"))
    assert "system_instruction" not in bare["config"] and "thinking_config" not in bare["config"]


def test_to_request_reencodes_a_type_the_budget_does_not_accept() -> None:
    from io import BytesIO

    from PIL import Image

    bmp = BytesIO()
    Image.open(BytesIO(PNG)).save(bmp, format="BMP")
    prompt = Prompt("c1", None, (ImagePart(bmp.getvalue(), "image/bmp"), TextPart("Q")), "t", "")
    wire = to_request(prompt, GenerationConfig(), "m", ImageBudget(media_types=("image/png", "image/jpeg")))
    blob = request_json(wire)["contents"][0]["parts"][0]["inline_data"]
    assert blob["mime_type"] == "image/png"
    assert Image.open(BytesIO(b64decode(blob["data"]))).tobytes() == Image.open(BytesIO(PNG)).tobytes()  # lossless
    assert wire.image_sent is not None and (wire.image_sent.width, wire.image_sent.height) == (112, 82)


def _response(payload: dict[str, object]) -> types.GenerateContentResponse:
    return types.GenerateContentResponse.model_validate(payload)


def test_from_response_reads_text_usage_and_outcomes() -> None:
    usage = {"prompt_token_count": 270, "candidates_token_count": 2, "thoughts_token_count": 40}
    answer = from_response(
        _response(
            {
                "candidates": [
                    {
                        "content": {
                            "role": "model",
                            "parts": [{"text": "thinking...", "thought": True}, {"text": "benign"}],
                        },
                        "finish_reason": "STOP",
                    }
                ],
                "usage_metadata": usage,
            }
        ),
        case_id="c",
        key="k",
    )
    assert (answer.text, answer.error, answer.finish_reason) == ("benign", None, "STOP")
    assert answer.usage is not None and (answer.usage.input_tokens, answer.usage.output_tokens) == (270, 42)
    blocked = from_response(
        _response({"prompt_feedback": {"block_reason": "PROHIBITED_CONTENT"}}), case_id="c", key="k"
    )
    assert (blocked.error, blocked.finish_reason, blocked.is_infra_error) == ("refused", "PROHIBITED_CONTENT", False)
    stopped = from_response(_response({"candidates": [{"finish_reason": "SAFETY"}]}), case_id="c", key="k")
    assert (stopped.error, stopped.text) == ("refused", None)
    assert from_response(_response({}), case_id="c", key="k").error == "empty"
    thoughts_only = {
        "content": {"role": "model", "parts": [{"text": "hmm", "thought": True}]},
        "finish_reason": "MAX_TOKENS",
    }
    cut = from_response(_response({"candidates": [thoughts_only]}), case_id="c", key="k")
    assert (cut.error, cut.finish_reason, cut.is_infra_error) == ("empty", "MAX_TOKENS", False)


def test_a_bad_extra_or_a_missing_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    with pytest.raises(ConfigError, match="extra"):
        adapter_module.create("gemini-test", AdapterOptions(extra={"thinking_budegt": 1}))
    monkeypatch.delenv("GEMINI_API_KEY")
    with pytest.raises(ConfigError, match="GOOGLE_API_KEY or GEMINI_API_KEY"):
        adapter_module.create("gemini-test", AdapterOptions())


# -- at the wire ---------------------------------------------------------------------------------------


def test_a_run_sends_every_image_byte_for_byte_and_writes_no_key(server: GoogleServer, tmp_path: Path) -> None:
    result = _run(server, tmp_path / "run")
    images = case_images(TASKS, 1)
    assert result.infra_errors == 0 and result.requested == len(images)
    received = [sent_images(r.body) for r in server.image_requests()]
    assert all(len(one) == 1 for one in received)
    assert sorted(sha(data) for ((_, data),) in received) == sorted(sha(data) for data in images.values())
    first = server.image_requests()[0].body
    assert first["generationConfig"]["temperature"] == 0.0 and first["generationConfig"]["maxOutputTokens"] == 1024
    assert server.requests[0].headers["x-goog-api-client"].startswith("google-genai-sdk/")
    stored = completions(tmp_path / "run")
    assert all(c.text == "benign" and c.image_sent is not None and not c.image_sent.resized for c in stored.values())
    assert manifest(tmp_path / "run")["model"] == {"adapter": "google", "model": "gemini-test", "revision": None}
    assert assert_no_secret(tmp_path / "run", KEY) >= 5


def test_transient_faults_are_retried_waiting_what_the_server_says(server: GoogleServer, tmp_path: Path) -> None:
    server.add_fault(Fault("rate_limit", retry_after="1"))
    server.add_fault(Fault("rate_limit", retry_after_ms="1200"))  # as google.rpc.RetryInfo: retryDelay "1.2s"
    for kind in ("overloaded", "server_error", "unavailable", "drop", "malformed"):
        server.add_fault(Fault(kind))
    result = _run(server, tmp_path / "run")
    assert result.infra_errors == 0
    assert manifest(tmp_path / "run")["dispatch"]["retries"] == 7
    requests = server.image_requests()
    for waited in (1.0, 1.2):
        failed = next(r for r in requests if r.fault == "rate_limit")
        requests.remove(failed)
        retry = next(r for r in requests if r.body == failed.body and r.arrived > failed.arrived)
        assert retry.arrived - failed.arrived >= waited - 0.05  # never sooner than the server asked
    answered = completions(tmp_path / "run")
    assert sum(c.attempts for c in answered.values()) == len(answered) + 7
    assert all(c.error is None for c in answered.values())


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_hangs_drops_and_garbage_are_retried_and_bounded_on_either_transport(
    server: GoogleServer, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_api_client, "has_aiohttp", transport == "aiohttp")  # the SDK's own switch
    case_id, image = next(iter(case_images(("ll",), 1).items()))
    fast = DispatchOptions(max_attempts=4, backoff_initial_s=0.01, timeout_s=0.3)
    for kind in ("hang", "drop", "malformed"):
        server.add_fault(Fault(kind))
    done = dispatch(GoogleAdapter("gemini-test", AdapterOptions(base_url=server.url)), [request_for(case_id)], fast)
    assert (done[0].error, done[0].attempts, done[0].text) == (None, 4, "benign")
    server.add_fault(Fault("drop", times=None))
    before = len(server.image_requests())
    done = dispatch(GoogleAdapter("gemini-test", AdapterOptions(base_url=server.url)), [request_for(case_id)], fast)
    assert (done[0].error, done[0].attempts, done[0].is_infra_error) == ("connection", 4, True)
    assert len(server.image_requests()) - before == 4  # exactly max_attempts: the SDK itself retried none
    assert sent_images(server.requests[-1].body)[0][1] == image


def test_persistent_faults_are_infra_errors_never_scored_and_the_next_run_completes_them(
    server: GoogleServer, tmp_path: Path
) -> None:
    server.add_fault(Fault("bad_request", times=2))
    server.add_fault(Fault("auth", times=1))
    first = _run(server, tmp_path / "run")
    assert first.infra_errors == 3
    stored = judgements(tmp_path / "run")
    failed = {c for c, j in stored.items() if j.outcome == "infra_error"}
    assert len(failed) == 3 and all(not stored[c].strict.counted for c in failed)
    assert sorted(first.summary.infra_error_case_ids) == sorted(failed)
    assert sorted(completions(tmp_path / "run")[c].error or "" for c in failed) == [
        "auth",
        "bad_request",
        "bad_request",
    ]
    asked = len(server.image_requests())
    second = _run(server, tmp_path / "run")
    assert second.infra_errors == 0 and second.requested == 3
    assert len(server.image_requests()) - asked == 3  # only the failed cases were asked again
    assert all(j.outcome != "infra_error" for j in judgements(tmp_path / "run").values())
    assert_no_secret(tmp_path / "run", KEY)


def test_safety_blocks_and_empty_answers_are_the_models_outcomes(server: GoogleServer, tmp_path: Path) -> None:
    server.add_fault(Fault("refusal"))
    server.add_fault(Fault("refusal_finish"))
    server.add_fault(Fault("empty"))
    result = _run(server, tmp_path / "run")
    assert result.infra_errors == 0
    stored = judgements(tmp_path / "run")
    outcomes = sorted(j.outcome for j in stored.values() if j.outcome in ("refused", "empty"))
    assert outcomes == ["empty", "refused", "refused"]
    for judgement in stored.values():
        if judgement.outcome in ("refused", "empty"):
            assert judgement.strict.counted and judgement.strict.correct is False  # scored wrong, not excluded


def test_the_image_budget_resizes_only_oversize_images_and_records_it(server: GoogleServer, tmp_path: Path) -> None:
    images = case_images(TASKS, 1)
    oversize = {c for c, data in images.items() if max(image_size(data)) > 100}
    assert 0 < len(oversize) < len(images)
    budget = {"image_budget": {"max_long_edge": 100, "max_bytes": 14_000_000}}
    adapter = GoogleAdapter("gemini-test", AdapterOptions(base_url=server.url, extra=budget))
    result = run(RunOptions(model="google/gemini-test", tasks=TASKS, limit=1, out=tmp_path / "b"), adapter=adapter)
    assert result.infra_errors == 0
    stored = completions(tmp_path / "b")
    assert {c for c, done in stored.items() if done.image_sent and done.image_sent.resized} == oversize
    arrived = {sha(data): image_size(data) for r in server.image_requests() for (_, data) in sent_images(r.body)}
    assert all(max(size) <= 100 for size in arrived.values())
    assert {sha(images[c]) for c in images if c not in oversize} <= set(arrived)  # the others byte for byte
    assert manifest(tmp_path / "b")["model"]["revision"].startswith("image-budget=bytes<=14000000,edge<=100")


def test_preflight_stops_a_wrong_key_and_an_unknown_model(
    server: GoogleServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def preflight(model: str) -> None:
        adapter = GoogleAdapter(model, AdapterOptions(base_url=server.url))
        try:
            await adapter.preflight()
        finally:
            await adapter.aclose()

    asyncio.run(preflight("gemini-test"))
    server.known_models = {"gemini-test"}
    with pytest.raises(ConfigError, match=r"google/gemini-nope: unknown model \(HTTP 404 NOT_FOUND"):
        asyncio.run(preflight("gemini-nope"))
    server.add_fault(Fault("overloaded", only_images=False))
    with pytest.raises(AdapterError) as transient:  # not a verdict on the set-up: the dispatcher retries it
        asyncio.run(preflight("gemini-test"))
    assert (transient.value.kind, transient.value.retryable) == ("server", True)
    monkeypatch.setenv("GEMINI_API_KEY", "AIza-wrong")
    with pytest.raises(ConfigError, match="API key was refused.*GEMINI_API_KEY") as refused:
        asyncio.run(preflight("gemini-test"))  # the Gemini API says so with a 400 API_KEY_INVALID
    assert "\n" not in str(refused.value) and "AIza-wrong" not in str(refused.value)


def test_a_run_checks_the_model_before_spending_and_retries_a_transient_preflight(
    server: GoogleServer, tmp_path: Path
) -> None:
    server.known_models = {"gemini-test"}
    options = RunOptions(model="google/gemini-nope", base_url=server.url, tasks=("ll",), limit=1, out=tmp_path / "x")
    with pytest.raises(ConfigError, match="gemini-nope: unknown model"):
        run(options)
    assert server.image_requests() == []  # stopped before any case was sent
    server.add_fault(Fault("overloaded", only_images=False))
    result = run(
        RunOptions(model="google/gemini-test", base_url=server.url, tasks=("ll",), limit=1, out=tmp_path / "y")
    )
    assert result.infra_errors == 0 and server.requests[1].fault == "overloaded"


def test_every_gemini_preset_builds_its_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    presets = [p for p in list_presets() if p.adapter == "google"]
    assert {p.name for p in presets} >= {"gemini-2.5-pro", "gemini-2.5-pro-preview", "gemini-1.5-pro"}
    for preset in presets:
        adapter = create_adapter(resolve_model(preset.name), AdapterOptions(extra=preset.extra))
        assert adapter.info.model == preset.model and "image-budget=" in (adapter.info.revision or "")
        asyncio.run(adapter.aclose())
