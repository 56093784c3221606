"""The Anthropic adapter: pure converters against goldens, then the real ``anthropic`` SDK against a local
Messages API stand-in (tests/anthropic_server.py) through u2eval's real dispatcher and runner."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx2
import pytest
from anthropic.types import Message
from anthropic_server import NEW_API_VERSION, AnthropicServer, sent_images
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

from model_adapters import anthropic as adapter_module
from model_adapters._wire import retry_after_s
from model_adapters.anthropic import AnthropicAdapter, classify, from_response, to_request
from u2eval.errors import AdapterError, ConfigError
from u2eval.models.images import ImageBudget, image_size
from u2eval.models.protocol import AdapterOptions
from u2eval.models.registry import create_adapter, list_presets, resolve_model
from u2eval.records import GenerationConfig, ImagePart, Prompt, TextPart
from u2eval.run.pacing import DispatchOptions
from u2eval.run.runner import RunOptions, RunResult, run

KEY = "sk-ant-api03-u2eval-TEST-KEY-do-not-log-0123456789"
TASKS = ("dd", "ll")
PNG = case_images(("ll",), 1)["ll/04/0/14e6a24e"]  # 112x82 grayscale PNG from the bundled sample


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[AnthropicServer]:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    for name in ("ANTHROPIC_BASE_URL", "ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE", "ANTHROPIC_CUSTOM_HEADERS"):
        monkeypatch.delenv(name, raising=False)
    stand_in = AnthropicServer(KEY, hang_s=2.0)
    with stand_in.running():
        yield stand_in


def _run(server: AnthropicServer, out: Path) -> RunResult:
    return run(RunOptions(model="anthropic/claude-test", base_url=server.url, tasks=TASKS, limit=1, out=out))


# -- pure converters ---------------------------------------------------------------------------------


def test_to_request_is_the_messages_body_with_the_image_lossless_and_the_system_apart() -> None:
    prompt = Prompt("c1", "You are a sonographer.", (ImagePart(PNG, "image/png"), TextPart("Which organ?")), "t", "")
    wire = to_request(prompt, GenerationConfig(temperature=0.0, max_tokens=64), "claude-test")
    assert wire.body == {
        "model": "claude-test",
        "max_tokens": 64,
        "system": "You are a sonographer.",
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image",
                        "source": {"type": "base64", "media_type": "image/png", "data": base64.b64encode(PNG).decode()},
                    },
                    {"type": "text", "text": "Which organ?"},
                ],
            }
        ],
    }
    assert wire.image_sent is not None and not wire.image_sent.resized
    assert (wire.image_sent.width, wire.image_sent.height, wire.image_sent.bytes) == (112, 82, len(PNG))


def test_to_request_sends_sampling_only_when_asked_and_top_p_only_off_its_default() -> None:
    prompt = Prompt("c1", None, (TextPart(""), TextPart("Q")), "t", "")
    plain = to_request(prompt, GenerationConfig(temperature=0.0), "m").body
    assert "temperature" not in plain and "top_p" not in plain and "system" not in plain
    assert plain["messages"][0]["content"] == [{"type": "text", "text": "Q"}]  # no empty text block
    sampled = to_request(prompt, GenerationConfig(temperature=0.0), "m", sampling=True).body
    assert sampled["temperature"] == 0.0 and "top_p" not in sampled
    nucleus = to_request(prompt, GenerationConfig(temperature=0.7, top_p=0.9), "m", sampling=True).body
    assert (nucleus["temperature"], nucleus["top_p"]) == (0.7, 0.9)


def test_to_request_fits_an_oversize_image_to_the_budget() -> None:
    prompt = Prompt("c1", None, (ImagePart(PNG, "image/png"), TextPart("Q")), "t", "")
    wire = to_request(prompt, GenerationConfig(), "m", ImageBudget(max_long_edge=56))
    (media_type, data) = sent_images(wire.body)[0]
    assert media_type == "image/png" and data != PNG
    assert wire.image_sent is not None and wire.image_sent.resized
    assert (wire.image_sent.width, wire.image_sent.height, wire.image_sent.bytes) == (56, 41, len(data))


def _message(content: list[dict[str, object]], stop_reason: str | None = "end_turn") -> Message:
    return Message.model_validate(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-test",
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": 1500, "output_tokens": 7},
        }
    )


def test_from_response_reads_text_usage_and_outcomes() -> None:
    thought: dict[str, object] = {"type": "thinking", "thinking": "The lesion is oval...", "signature": "sig"}
    answer = from_response(
        _message([thought, {"type": "text", "text": "beni"}, {"type": "text", "text": "gn"}]), case_id="c", key="k"
    )
    assert (answer.text, answer.error, answer.finish_reason) == ("benign", None, "end_turn")
    assert answer.usage is not None and (answer.usage.input_tokens, answer.usage.output_tokens) == (1500, 7)
    cut = from_response(_message([{"type": "text", "text": "The answ"}], "max_tokens"), case_id="c", key="k")
    assert (cut.text, cut.error, cut.finish_reason) == ("The answ", None, "max_tokens")
    refused = from_response(_message([], "refusal"), case_id="c", key="k")
    assert (refused.error, refused.text, refused.is_infra_error) == ("refused", None, False)
    empty = from_response(_message([{"type": "text", "text": "  "}]), case_id="c", key="k")
    assert (empty.error, empty.is_infra_error) == ("empty", False)
    assert from_response(_message([]), case_id="c", key="k").error == "empty"


def test_a_bad_extra_or_a_missing_key_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with pytest.raises(ConfigError, match="extra"):
        adapter_module.create("claude-test", AdapterOptions(extra={"image_budegt": {}}))
    with pytest.raises(ConfigError, match="needs a model"):
        adapter_module.create("", AdapterOptions())
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(ConfigError, match="ANTHROPIC_API_KEY"):
        adapter_module.create("claude-test", AdapterOptions())


# -- at the wire ---------------------------------------------------------------------------------------


def test_a_run_sends_every_image_byte_for_byte_and_writes_no_key(server: AnthropicServer, tmp_path: Path) -> None:
    result = _run(server, tmp_path / "run")
    images = case_images(TASKS, 1)
    assert result.infra_errors == 0 and result.requested == len(images)
    received = [sent_images(r.body) for r in server.image_requests()]
    assert all(len(one) == 1 for one in received)
    assert sorted(sha(data) for ((_, data),) in received) == sorted(sha(data) for data in images.values())
    first = server.image_requests()[0]
    assert first.headers["anthropic-version"] == NEW_API_VERSION  # the SDK's default when no preset says
    assert first.headers["x-stainless-retry-count"] == "0"
    assert "temperature" not in first.body and first.body["model"] == "claude-test"
    stored = completions(tmp_path / "run")
    assert all(c.text == "benign" and c.image_sent is not None and not c.image_sent.resized for c in stored.values())
    assert manifest(tmp_path / "run")["model"] == {
        "adapter": "anthropic",
        "model": "claude-test",
        "revision": "anthropic-version=sdk-default sampling=not-sent",
    }
    assert assert_no_secret(tmp_path / "run", KEY) >= 5


def test_transient_faults_are_retried_waiting_what_retry_after_says(server: AnthropicServer, tmp_path: Path) -> None:
    server.add_fault(Fault("rate_limit", retry_after="1"))
    server.add_fault(Fault("rate_limit", retry_after_ms="1200"))
    for kind in ("overloaded", "server_error", "unavailable", "drop", "malformed"):
        server.add_fault(Fault(kind))
    result = _run(server, tmp_path / "run")
    assert result.infra_errors == 0
    assert manifest(tmp_path / "run")["dispatch"]["retries"] == 7
    requests = server.image_requests()
    for waited, fault in ((1.0, "rate_limit"), (1.2, "rate_limit")):
        failed = next(r for r in requests if r.fault == fault)
        requests.remove(failed)
        retry = next(r for r in requests if r.body == failed.body and r.arrived > failed.arrived)
        assert retry.arrived - failed.arrived >= waited - 0.05  # never sooner than the server asked
    answered = completions(tmp_path / "run")
    assert sum(c.attempts for c in answered.values()) == len(answered) + 7
    assert all(c.error is None for c in answered.values())


def test_a_hang_past_the_timeout_is_retried_and_bounded(server: AnthropicServer) -> None:
    case_id, image = next(iter(case_images(("ll",), 1).items()))
    fast = DispatchOptions(max_attempts=3, backoff_initial_s=0.01, timeout_s=0.3)
    server.add_fault(Fault("hang"))
    done = dispatch(AnthropicAdapter("claude-test", AdapterOptions(base_url=server.url)), [request_for(case_id)], fast)
    assert (done[0].error, done[0].attempts) == (None, 2)
    server.add_fault(Fault("hang", times=None))
    before = len(server.image_requests())
    done = dispatch(AnthropicAdapter("claude-test", AdapterOptions(base_url=server.url)), [request_for(case_id)], fast)
    assert (done[0].error, done[0].attempts, done[0].is_infra_error) == ("timeout", 3, True)
    assert len(server.image_requests()) - before == 3  # bounded: exactly max_attempts calls, the SDK retried none
    assert sent_images(server.requests[-1].body)[0][1] == image


def test_retry_after_reads_milliseconds_seconds_and_http_dates() -> None:
    assert retry_after_s({"Retry-After-Ms": "1500", "Retry-After": "9"}) == 1.5
    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, now=1445412480.0) == 10.0
    assert retry_after_s({"retry-after": "soon"}) is None and retry_after_s(None) is None


def test_sdk_failures_are_classified_for_the_dispatcher() -> None:
    request = httpx2.Request("POST", "http://127.0.0.1/v1/messages", headers={"x-api-key": KEY})
    timeout = classify(anthropic.APITimeoutError(request=request), KEY)
    assert (timeout.kind, timeout.retryable) == ("timeout", True)

    def status(code: int, kind: str, headers: dict[str, str] | None = None) -> AdapterError:
        body = {"type": "error", "error": {"type": kind, "message": f"echo {KEY}"}}
        response = httpx2.Response(code, json=body, headers=headers, request=request)
        return classify(anthropic.APIStatusError("x", response=response, body=body), KEY)

    limited = status(429, "rate_limit_error", {"retry-after-ms": "250", "retry-after": "9"})
    assert (limited.kind, limited.retryable, limited.retry_after_s) == ("rate_limit", True, 0.25)
    assert KEY not in str(limited) and "***" in str(limited)  # a key echoed by a proxy is blanked
    assert (status(529, "overloaded_error").kind, status(529, "overloaded_error").retryable) == ("server", True)
    assert (status(403, "permission_error").kind, status(403, "permission_error").retryable) == ("auth", False)
    assert (status(404, "not_found_error").kind, status(404, "not_found_error").retryable) == ("bad_request", False)
    assert (status(413, "request_too_large").kind, status(408, "timeout_error").kind) == ("bad_request", "timeout")


def test_persistent_faults_are_infra_errors_never_scored_and_the_next_run_completes_them(
    server: AnthropicServer, tmp_path: Path
) -> None:
    server.add_fault(Fault("bad_request", times=2))
    server.add_fault(Fault("auth", times=1))
    first = _run(server, tmp_path / "run")
    assert first.infra_errors == 3
    failed = {c for c, j in judgements(tmp_path / "run").items() if j.outcome == "infra_error"}
    assert len(failed) == 3
    assert all(not judgements(tmp_path / "run")[c].strict.counted for c in failed)
    assert sorted(first.summary.infra_error_case_ids) == sorted(failed)
    kinds = sorted(completions(tmp_path / "run")[c].error or "" for c in failed)
    assert kinds == ["auth", "bad_request", "bad_request"]
    asked = len(server.image_requests())
    second = _run(server, tmp_path / "run")
    assert second.infra_errors == 0 and second.requested == 3
    assert len(server.image_requests()) - asked == 3  # only the failed cases were asked again
    assert all(j.outcome != "infra_error" for j in judgements(tmp_path / "run").values())
    assert_no_secret(tmp_path / "run", KEY)


def test_refusals_and_empty_answers_are_the_models_outcomes(server: AnthropicServer, tmp_path: Path) -> None:
    server.add_fault(Fault("refusal"))
    server.add_fault(Fault("empty"))
    result = _run(server, tmp_path / "run")
    assert result.infra_errors == 0
    outcomes = {j.outcome for j in judgements(tmp_path / "run").values()}
    assert {"refused", "empty"} <= outcomes
    for judgement in judgements(tmp_path / "run").values():
        if judgement.outcome in ("refused", "empty"):
            assert judgement.strict.counted and judgement.strict.correct is False  # scored wrong, not excluded


def test_the_image_budget_resizes_only_oversize_images_and_records_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    images = case_images(TASKS, 1)
    strict_server = AnthropicServer(KEY, max_image_edge=100)
    with strict_server.running():
        unbudgeted = _run(strict_server, tmp_path / "plain")
        oversize = {c for c, data in images.items() if max(image_size(data)) > 100}
        assert 0 < len(oversize) < len(images)
        assert unbudgeted.infra_errors == len(oversize)  # the API refuses them
        budget = {"image_budget": {"max_long_edge": 100}}
        adapter = AnthropicAdapter("claude-test", AdapterOptions(base_url=strict_server.url, extra=budget))
        options = RunOptions(model="anthropic/claude-test", tasks=TASKS, limit=1, out=tmp_path / "budget")
        budgeted = run(options, adapter=adapter)
        assert budgeted.infra_errors == 0
        stored = completions(tmp_path / "budget")
        assert {c for c, done in stored.items() if done.image_sent and done.image_sent.resized} == oversize
        for done in stored.values():
            assert done.image_sent is not None and max(done.image_sent.width, done.image_sent.height) <= 100
        arrived = {
            sha(data) for r in strict_server.image_requests()[-len(images) :] for (_, data) in sent_images(r.body)
        }
        assert {sha(images[c]) for c in images if c not in oversize} <= arrived  # the others byte for byte
        assert not {sha(images[c]) for c in oversize} & arrived


def test_preflight_stops_a_wrong_key_an_unknown_model_and_a_rejected_setting(
    server: AnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def preflight(model: str, **extra: object) -> None:
        adapter = AnthropicAdapter(model, AdapterOptions(base_url=server.url, extra=extra))
        try:
            await adapter.preflight()
        finally:
            await adapter.aclose()

    asyncio.run(preflight("claude-test"))
    server.known_models = {"claude-test"}
    with pytest.raises(ConfigError, match=r"anthropic/claude-nope: unknown model \(HTTP 404"):
        asyncio.run(preflight("claude-nope"))
    with pytest.raises(ConfigError, match="temperature: Extra inputs are not permitted"):
        asyncio.run(preflight("claude-test", sampling=True))  # API 2026-10-21 has no temperature
    asyncio.run(preflight("claude-test", sampling=True, api_version="2023-06-01"))
    assert server.requests[-1].body["temperature"] == 0.0
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong")
    with pytest.raises(ConfigError, match="API key was refused.*ANTHROPIC_API_KEY") as refused:
        asyncio.run(preflight("claude-test"))
    assert "\n" not in str(refused.value) and "sk-ant-wrong" not in str(refused.value)


def test_every_claude_preset_builds_its_adapter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    presets = [p for p in list_presets() if p.adapter == "anthropic"]
    assert {p.name for p in presets} >= {"claude-3-7-sonnet", "claude-sonnet-4-5"}
    for preset in presets:
        resolved = resolve_model(preset.name)
        adapter = create_adapter(resolved, AdapterOptions(generation=preset.generation, extra=preset.extra))
        assert adapter.info.model == preset.model and "sampling=sent" in (adapter.info.revision or "")
        asyncio.run(adapter.aclose())


def test_the_cli_says_one_line_for_a_wrong_key(server: AnthropicServer, tmp_path: Path) -> None:
    # One subprocess only: importing anthropic 2.x alone takes ~3 s.
    env = {**os.environ, "ANTHROPIC_API_KEY": "sk-ant-wrong-key", "COLUMNS": "200"}
    args = ["--model", "anthropic/claude-test", "--base-url", server.url, "--tasks", "ll", "--limit", "1"]
    command = [sys.executable, "-m", "u2eval", "run", *args, "--out", str(tmp_path / "run")]
    refused = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "anthropic/claude-test: the API key was refused" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1 and "sk-ant-wrong-key" not in refused.stdout + refused.stderr
    assert server.image_requests() == []  # stopped before any case was sent
