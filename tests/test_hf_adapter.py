"""The in-process transformers adapter: its pure converters (no torch needed), then whole runs of the bundled
sample through u2eval's runner with real models built here from configs with random weights (no download):
a tiny LLaVA for the ``generate`` path, and a custom-code model with UniBiomed's ``predict_forward`` signature,
loaded through ``trust_remote_code`` from a local folder, for the masks path (tests/hf_standin.py)."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from wire_checks import case_images, completions, request_for

from model_adapters._local import parse_settings
from model_adapters.hf import HFAdapter
from model_adapters.hf_convert import (
    HFSettings,
    clean_text,
    decode_image,
    from_prediction,
    generation_kwargs,
    masks_of,
    model_identity,
    predict_text,
    seg_labels,
    split_generated,
    to_messages,
)
from model_adapters.hf_loading import Loaded, case_failure, is_fatal, is_oom, load_model
from u2eval.errors import AdapterError, ConfigError
from u2eval.grounded.regions import mask_to_array
from u2eval.models.images import ImageBudget
from u2eval.models.protocol import AdapterOptions, ModelRequest
from u2eval.models.registry import create_adapter, list_presets, resolve_model
from u2eval.records import Completion, GenerationConfig, ImagePart, ImageSent, Prompt, TextPart
from u2eval.run.runner import RunOptions, RunResult, run

CASE = "ll/04/0/14e6a24e"  # a 112x82 grayscale PNG of the bundled sample
TASKS = ("dd", "ll")  # with limit 1: one case per dataset, 18 in the bundled sample
CPU = ("cpu", "float32")


def _request(text: str = "Where is the lesion?") -> ModelRequest:
    base = request_for(CASE)
    prompt = Prompt(CASE, None, (ImagePart(base.case.image, "image/png"), TextPart(text)), "t", "")
    return ModelRequest(f"key-{text}", base.case, prompt)


# -- pure converters ---------------------------------------------------------------------------------------


def test_a_prompt_becomes_a_chat_conversation_with_image_slots_in_order() -> None:
    image = ImagePart(b"png-bytes", "image/png")
    prompt = Prompt("c", "You are a radiologist.", (TextPart("Look:"), image, TextPart("Which side?")), "t", "")
    messages, images = to_messages(prompt)
    assert messages == [
        {"role": "system", "content": [{"type": "text", "text": "You are a radiologist."}]},
        {
            "role": "user",
            "content": [{"type": "text", "text": "Look:"}, {"type": "image"}, {"type": "text", "text": "Which side?"}],
        },
    ]
    assert images == [image]
    text, parts = predict_text(prompt)
    assert text == "You are a radiologist.\nLook:\n<image>\nWhich side?" and parts == [image]
    assert predict_text(request_for(CASE).prompt, "<img>")[0].startswith("<img>\n")  # the sample: image first


def test_an_image_is_decoded_to_rgb_at_its_size_unless_a_budget_shrinks_it() -> None:
    part = request_for(CASE).prompt.parts[0]
    assert isinstance(part, ImagePart)
    image, sent = decode_image(part)
    assert image.mode == "RGB" and image.size == (112, 82)
    assert sent == ImageSent(width=112, height=82, bytes=len(part.data), media_type="image/png")
    with Image.open(io.BytesIO(part.data)) as original:
        assert image.tobytes() == original.convert("RGB").tobytes()  # the pixels themselves, untouched
    small, small_sent = decode_image(part, ImageBudget(max_long_edge=56))
    assert small.size == (56, 41) and small_sent.resized and (small_sent.width, small_sent.height) == (56, 41)
    with pytest.raises(ValueError, match="unreadable image"):
        decode_image(ImagePart(b"not an image", "image/png"))


def test_generation_settings_are_the_runs_and_neutralise_the_models_own_defaults() -> None:
    greedy = generation_kwargs(GenerationConfig(temperature=0.0, max_tokens=77))
    assert greedy == {
        "max_new_tokens": 77,
        "do_sample": False,
        "num_beams": 1,
        "repetition_penalty": 1.0,
        "no_repeat_ngram_size": 0,
    }
    sampled = generation_kwargs(GenerationConfig(temperature=0.7, top_p=0.9), {"repetition_penalty": 1.05})
    assert sampled["do_sample"] and (sampled["temperature"], sampled["top_p"], sampled["top_k"]) == (0.7, 0.9, 0)
    assert sampled["repetition_penalty"] == 1.05  # a preset's generate_kwargs win


def test_a_generated_row_ends_at_its_first_stop_token() -> None:
    stop = frozenset({2, 9})
    assert split_generated([5, 6, 2, 0, 0], stop, 5) == ([5, 6], 3, "stop")  # padding after the stop is not text
    assert split_generated([5, 9], stop, 8) == ([5], 2, "stop")
    assert split_generated([5, 6, 7], stop, 3) == ([5, 6, 7], 3, "length")
    assert split_generated([5, 6], stop, 3) == ([5, 6], 2, "stop")  # ended by a stopping criterion
    assert split_generated([], stop, 3) == ([], 0, "stop")


def test_each_seg_token_is_labelled_by_the_phrase_just_before_it() -> None:
    assert seg_labels("<p> left kidney </p> [SEG] and <p>a  cyst</p>[SEG].<|end|>") == ["left kidney", "a cyst"]
    assert seg_labels("It is [SEG]. liver.") == [None]
    assert seg_labels("<p> a </p> then <p> b </p> [SEG]") == ["b"]
    assert seg_labels("<p> a </p> text [SEG]") == [None]  # the phrase must be right before the token
    assert seg_labels("<p> </p> [SEG]") == [None]
    assert seg_labels("no mask here") == []
    assert seg_labels("<p>x</p><MASK>", "<MASK>") == ["x"]


def test_masks_become_run_length_records_that_give_the_arrays_back() -> None:
    rng = np.random.default_rng(0)
    first = rng.random((1, 6, 9)) > 0.5  # predict_forward's shape: (frames, H, W) per [SEG]
    second = rng.random((6, 9)) > 0.7
    masks = masks_of([first, second.astype(np.uint8)], ["lesion"], size=(9, 6))
    assert [(m.width, m.height, m.label) for m in masks] == [(9, 6, "lesion"), (9, 6, None)]
    assert (mask_to_array(masks[0]) == first[0]).all() and (mask_to_array(masks[1]) == second).all()
    two_frames = masks_of([np.stack([second, ~second])], ["a"])
    assert len(two_frames) == 2 and (mask_to_array(two_frames[1]) == ~second).all()
    with pytest.raises(ValueError, match="mask 0 is 9x6, the image 6x9"):
        masks_of([first], [], size=(6, 9))
    with pytest.raises(ValueError, match=r"shape \(9,\)"):
        masks_of([np.zeros(9)], [])


def test_a_prediction_becomes_text_without_markup_and_native_regions(tmp_path: Path) -> None:
    request = _request()
    settings = HFSettings(
        mode="predict_forward", strip_tokens=("<|end|>", "<p>", "</p>", "[SEG]"), stop_words=("<|end|>",)
    )
    mask = np.zeros((1, 82, 112), dtype=bool)
    mask[0, 10:20, 30:60] = True
    raw = {"prediction": "<p> upper left </p> [SEG] lesion.<|end|>", "prediction_masks": [mask]}
    sent = ImageSent(width=112, height=82, bytes=1, media_type="image/png")
    done = from_prediction(raw, request, settings, sent=sent, output_tokens=9, latency_s=0.5)
    assert (done.text, done.error, done.finish_reason, done.latency_s) == ("upper left lesion.", None, "stop", 0.5)
    assert done.regions is not None and done.regions.source == "native" and done.regions.convention is None
    (stored,) = done.regions.masks
    assert stored.label == "upper left" and (mask_to_array(stored) == mask[0]).all()
    assert done.usage is not None and done.usage.output_tokens == 9
    assert Completion.model_validate_json(done.model_dump_json()) == done  # it goes to disk as it is
    cut = from_prediction({"prediction": "<p> a b", "prediction_masks": []}, request, settings)
    assert (cut.text, cut.finish_reason, cut.regions) == ("a b", "length", None)  # no stop word: cut short
    unknown = from_prediction({"prediction": "a b"}, request, HFSettings(mode="predict_forward"))
    assert unknown.finish_reason is None and unknown.usage is not None and unknown.usage.output_tokens is None
    assert from_prediction({"prediction": "[SEG]<|end|>"}, request, settings).error == "empty"
    assert from_prediction(["text"], request, settings).error == "malformed"
    wrong = from_prediction(
        {"prediction": "[SEG]", "prediction_masks": [mask]},
        request,
        settings,
        sent=sent.model_copy(update={"width": 50}),
    )
    assert wrong.error == "malformed" and "the image 50x82" in (wrong.error_message or "")
    assert clean_text(" a <|end|>\nb  c ", ("<|end|>",)) == "a\nb c" and clean_text(" x  y ", ()) == "x  y"


def test_failures_are_classified_per_case() -> None:
    request = _request()

    class OutOfMemoryError(RuntimeError):  # torch's class name; torch itself is not needed to classify
        pass

    oom = case_failure(request, OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    assert oom.error == "server" and "out of GPU memory with this case alone" in (oom.error_message or "")
    assert case_failure(request, ValueError("bad image")).error == "bad_request"
    other = case_failure(request, AssertionError("no image tokens"))
    assert other.error == "bad_request" and other.error_message == "AssertionError: no image tokens"
    assert is_oom(OutOfMemoryError("x")) and is_oom(RuntimeError("CUDA error: out of memory"))
    assert is_fatal(RuntimeError("CUDA error: an illegal memory access was encountered"))
    assert not is_fatal(RuntimeError("CUDA error: out of memory")) and not is_fatal(ValueError("shape"))


def test_the_identity_changes_with_what_changes_answers_and_not_with_speed(tmp_path: Path) -> None:
    def identity(model: str = "org/model", dtype: str = "bfloat16", template: str | None = None, **extra: Any) -> str:
        return model_identity(model, parse_settings("hf", extra, HFSettings), dtype, template)

    base = identity(model_kwargs={"attn_implementation": "sdpa"})
    assert base.startswith("unpinned;hf-")
    same = identity(
        model_kwargs={"attn_implementation": "sdpa", "device_map": "auto", "low_cpu_mem_usage": True},
        chunk_size=7,
        batch_size=3,
        device="cuda:1",
    )
    assert same == base
    different = [
        identity(dtype="float32", model_kwargs={"attn_implementation": "sdpa"}),
        identity(model_kwargs={"attn_implementation": "eager"}),
        identity(model_kwargs={"attn_implementation": "sdpa"}, template="{{ messages }}"),
        identity(model_kwargs={"attn_implementation": "sdpa"}, image_budget={"max_pixels": 10}),
        identity(model_kwargs={"attn_implementation": "sdpa"}, processor_kwargs={"max_pixels": 200704}),
        identity(model_kwargs={"attn_implementation": "sdpa"}, strip_tokens=["<|end|>"]),
        identity(model_kwargs={"attn_implementation": "sdpa"}, mode="predict_forward"),
    ]
    assert identity(model_kwargs={"attn_implementation": "sdpa"}, stop_words=["<|end|>"]) == base
    assert len({base, *different}) == 1 + len(different)
    assert identity(revision="abc123").startswith("rev=abc123;hf-")
    assert identity(str(tmp_path)).startswith(f"local={tmp_path.resolve()};hf-")
    adapter = HFAdapter("org/model", AdapterOptions(), HFSettings(), device=CPU)
    assert (adapter.info.adapter, adapter.info.model, adapter.max_batch_size) == ("hf", "org/model", 64)
    assert adapter.info.revision == identity(dtype="float32")
    asyncio.run(adapter.aclose())


def test_bad_settings_are_one_line_config_errors() -> None:
    with pytest.raises(ConfigError, match="hf: invalid preset extra: batch_sise: Extra inputs"):
        parse_settings("hf", {"batch_sise": 2}, HFSettings)
    with pytest.raises(ConfigError, match="mode: Input should be 'generate' or 'predict_forward'"):
        parse_settings("hf", {"mode": "chat"}, HFSettings)
    with pytest.raises(ConfigError, match="hf needs a model"):
        HFAdapter("", AdapterOptions(), HFSettings(), device=CPU)
    with pytest.raises(ConfigError, match="chat_template 'nosuch.jinja': no such file"):
        HFAdapter("m", AdapterOptions(), HFSettings(chat_template="nosuch.jinja"), device=CPU)


def test_the_unibiomed_preset_holds_the_facts_of_its_code() -> None:
    resolved = resolve_model("unibiomed")
    assert (resolved.adapter, resolved.model) == ("hf", "Luffy503/UniBiomed") and resolved.preset is not None
    settings = parse_settings("hf", resolved.preset.extra, HFSettings)
    assert settings.mode == "predict_forward" and settings.trust_remote_code
    assert (settings.device, settings.dtype, settings.image_placeholder, settings.seg_token) == (
        "cuda",
        "bfloat16",
        "<image>",
        "[SEG]",
    )
    assert {"<|end|>", "<p>", "</p>", "[SEG]"} <= set(settings.strip_tokens)
    assert resolved.preset.generation.temperature == 0.0
    assert "Known" in resolved.preset.description and "Chosen" in resolved.preset.description
    hf_presets = [p for p in list_presets() if p.adapter == "hf"]
    for preset in hf_presets:
        parse_settings("hf", preset.extra, HFSettings)  # every hf preset's extra is valid


@pytest.mark.skipif(importlib.util.find_spec("torch") is not None, reason="torch is installed")
def test_without_torch_the_adapter_says_which_extra_to_install() -> None:
    with pytest.raises(
        ConfigError, match=r"adapter 'hf' cannot be loaded \(torch missing\): pip install 'u2eval\[hf\]'"
    ):
        create_adapter(resolve_model("unibiomed"), AdapterOptions())


# -- real models: a tiny LLaVA (generate) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """transformers offline, its custom-code copies in a temporary folder."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import huggingface_hub.constants
    from hf_standin import modules_cache

    root = tmp_path_factory.mktemp("hf")
    with pytest.MonkeyPatch.context() as patch, modules_cache(root / "modules"):
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import, maybe before this
        yield root


@pytest.fixture(scope="module")
def llava(hf_home: Path) -> Path:
    from hf_standin import build_tiny_llava

    return build_tiny_llava(hf_home / "tiny-llava")


def _adapter(folder: Path, generation: GenerationConfig | None = None, loader: Any = None, **extra: Any) -> HFAdapter:
    settings = parse_settings("hf", {"device": "cpu", **extra}, HFSettings)
    options = AdapterOptions(generation=generation or GenerationConfig(max_tokens=8, seed=0))
    return HFAdapter(str(folder), options, settings, **({"loader": loader} if loader else {}))


def _run(folder: Path, adapter: HFAdapter, **options: Any) -> RunResult:
    return run(
        RunOptions(model=f"hf/{adapter.info.model}", out=folder, tasks=TASKS, limit=1, **options), adapter=adapter
    )


def _reference(model_folder: Path, requests: list[ModelRequest], max_tokens: int) -> dict[str, str]:
    """What transformers itself answers, one conversation at a time, greedy: case_id -> text."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(model_folder, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(model_folder)
    answers = {}
    for request in requests:
        messages, parts = to_messages(request.prompt)
        images = [Image.open(io.BytesIO(p.data)).convert("RGB") for p in parts]
        text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        inputs = processor(text=[text], images=images, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False, repetition_penalty=1.0)
        new = out[0, inputs["input_ids"].shape[1] :].tolist()
        stop = model.generation_config.eos_token_id
        new = new[: new.index(stop)] if stop in new else new
        answers[request.case.case_id] = processor.tokenizer.decode(new, skip_special_tokens=True)
    return answers


def _texts(folder: Path) -> dict[str, tuple[str | None, str | None]]:
    return {k: (c.text, c.error) for k, c in completions(folder).items()}


def _run_requests(folder: Path) -> list[ModelRequest]:
    cases = [json.loads(line) for line in (folder / "cases.jsonl").read_text().splitlines() if line.strip()]
    return [request_for(c["case"]["case_id"]) for c in cases]


def test_a_run_stores_what_transformers_answers_and_batching_changes_nothing(tmp_path: Path, llava: Path) -> None:
    first = run(RunOptions(model=f"hf/{llava}", out=tmp_path / "a", tasks=TASKS, limit=1, max_tokens=8))
    assert first.requested == len(case_images(TASKS, 1)) and first.infra_errors == 0
    assert first.manifest.model.adapter == "hf" and first.manifest.model.model == str(llava)
    assert (first.manifest.model.revision or "").startswith(f"local={llava.resolve()};hf-")
    stored = completions(tmp_path / "a")
    reference = _reference(llava, _run_requests(tmp_path / "a"), max_tokens=8)
    assert {k: c.text for k, c in stored.items() if c.error is None} == {
        k: v for k, v in reference.items() if v.strip()
    }
    assert all(c.error == "empty" for k, c in stored.items() if not reference[k].strip())
    some = next(iter(stored.values()))
    assert some.usage is not None and some.usage.input_tokens and some.usage.output_tokens
    assert some.image_sent is not None and some.finish_reason in ("stop", "length")
    assert len({c.text for c in stored.values()}) > 1  # the answers depend on the case

    second = run(RunOptions(model=f"hf/{llava}", out=tmp_path / "b", tasks=TASKS, limit=1, max_tokens=8))
    assert _texts(tmp_path / "b") == _texts(tmp_path / "a")  # deterministic
    assert (tmp_path / "b" / "summary.json").read_bytes() == (tmp_path / "a" / "summary.json").read_bytes()
    assert second.manifest.model == first.manifest.model
    one_by_one = _run(tmp_path / "c", _adapter(llava, batch_size=1, chunk_size=5))
    assert _texts(tmp_path / "c") == _texts(tmp_path / "a")  # batch 1 == batch 8, left padding and all
    assert one_by_one.manifest.model == first.manifest.model  # batch and chunk sizes are not the identity


class _Flaky:
    """The loaded model with failures on demand around its real ``generate``: it raises ``make(texts)``'s
    exception when that returns one for the batch's decoded inputs."""

    def __init__(self, loaded: Loaded, make: Callable[[list[str]], Exception | None]) -> None:
        self.real, self.make, self.batches = loaded.model, make, []
        self.tokenizer = loaded.tokenizer

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def generate(self, **inputs: Any) -> Any:
        texts = self.tokenizer.batch_decode(inputs["input_ids"], skip_special_tokens=True)
        self.batches.append(len(texts))
        failure = self.make(texts)
        if failure is not None:
            raise failure
        return self.real.generate(**inputs)


def _flaky_loader(make: Callable[[list[str]], Exception | None], models: list[_Flaky]) -> Any:
    def load(*args: Any) -> Loaded:
        loaded = load_model(*args)
        flaky = _Flaky(loaded, make)
        models.append(flaky)
        return replace(loaded, model=flaky)

    return load


def _generate(adapter: HFAdapter, requests: list[ModelRequest]) -> dict[str, Completion]:
    async def go() -> list[Completion]:
        try:
            return await adapter.generate(requests)
        finally:
            await adapter.aclose()

    return {c.key: c for c in asyncio.run(go())}


def test_one_failing_case_is_isolated_and_out_of_memory_batches_are_halved(llava: Path) -> None:
    import torch

    texts = ["first question", "second question", "POISON question", "fourth question", "HUGE question", "last"]
    requests = [_request(t) for t in texts]

    def make(batch: list[str]) -> Exception | None:
        if any("POISON" in t for t in batch):
            return ValueError("Image features and image tokens do not match")
        if len(batch) > 2 or any("HUGE" in t for t in batch):
            return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return None

    models: list[_Flaky] = []
    got = _generate(_adapter(llava, loader=_flaky_loader(make, models), batch_size=8), requests)
    plain = _generate(_adapter(llava, batch_size=1), requests)
    poison, huge = got["key-POISON question"], got["key-HUGE question"]
    assert poison.error == "bad_request" and "Image features and image tokens" in (poison.error_message or "")
    assert huge.error == "server" and "out of GPU memory with this case alone" in (huge.error_message or "")
    for key in ("key-first question", "key-second question", "key-fourth question", "key-last"):
        assert (got[key].text, got[key].error) == (plain[key].text, plain[key].error)  # answered, as unbatched
    assert models[0].batches[0] == 6 and max(models[0].batches[1:]) <= 3 and len(models[0].batches) < 16


def test_a_cuda_fault_fails_the_chunk_and_the_model_is_loaded_once(llava: Path) -> None:
    fault = RuntimeError("CUDA error: an illegal memory access was encountered")
    models: list[_Flaky] = []
    adapter = _adapter(llava, loader=_flaky_loader(lambda batch: fault, models))
    with pytest.raises(AdapterError, match="transformers failed: CUDA error: an illegal memory access"):
        _generate(adapter, [_request("a"), _request("b")])
    assert len(models) == 1 and models[0].batches == [2]  # not halved: the device cannot be trusted


def test_preflight_stops_a_model_that_does_not_load_or_a_device_that_is_not_there(tmp_path: Path, llava: Path) -> None:
    import torch

    with pytest.raises(ConfigError, match="the model did not load on cpu"):
        _run(tmp_path / "a", _adapter(tmp_path / "no-such-model"))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="device 'cuda', but torch .* sees no CUDA GPU"):
            _run(tmp_path / "b", _adapter(llava, device="cuda"))
    with pytest.raises(ConfigError, match="has no predict_forward"):
        _run(tmp_path / "c", _adapter(llava, mode="predict_forward"))


# -- a custom-code model with predict_forward (UniBiomed's call) ----------------------------------------------------


@pytest.fixture(scope="module")
def seg_model(hf_home: Path) -> Path:
    from hf_standin import build_seg_standin

    return build_seg_standin(hf_home / "seg-standin")


def _seg_adapter(folder: Path, max_tokens: int = 1024, **overrides: Any) -> HFAdapter:
    """The unibiomed preset's own settings, on the CPU, with the stand-in's weights."""
    preset = resolve_model("unibiomed").preset
    assert preset is not None
    extra = {**preset.extra, "device": "cpu", "dtype": "float32", **overrides}
    generation = preset.generation.model_copy(update={"max_tokens": max_tokens, "seed": 0})
    return HFAdapter(str(folder), AdapterOptions(generation=generation), parse_settings("hf", extra, HFSettings))


def _direct(folder: Path, requests: list[ModelRequest]) -> dict[str, dict[str, Any]]:
    """What the model's own predict_forward returns, called as UniBiomed's example calls it: case_id -> dict."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    out = {}
    for request in requests:
        text, (part,) = predict_text(request.prompt)
        image = Image.open(io.BytesIO(part.data)).convert("RGB")
        out[request.case.case_id] = model.predict_forward(image=image, text=text, tokenizer=tokenizer)
    return out


def test_masks_of_a_custom_code_model_reach_the_stored_answers(tmp_path: Path, seg_model: Path) -> None:
    result = _run(tmp_path / "a", _seg_adapter(seg_model))
    assert result.requested == len(case_images(TASKS, 1)) and result.infra_errors == 0
    assert (result.manifest.model.revision or "").startswith(f"local={seg_model.resolve()};hf-")
    stored = completions(tmp_path / "a")
    direct = _direct(seg_model, _run_requests(tmp_path / "a"))
    for case_id, done in stored.items():
        raw = direct[case_id]
        assert "[SEG]" in raw["prediction"] and "<|end|>" in raw["prediction"]
        answer = raw["prediction"].split("</p>")[0].removeprefix("<p>").strip()
        assert done.text == f"{answer} and dark area" and done.error is None  # markup and stop word removed
        assert done.regions is not None and done.regions.source == "native"
        assert [m.label for m in done.regions.masks] == [answer, "dark area"]
        assert done.image_sent is not None
        for mask, expected in zip(done.regions.masks, raw["prediction_masks"], strict=True):
            assert (mask.width, mask.height) == (done.image_sent.width, done.image_sent.height)
            assert (mask_to_array(mask) == expected[0]).all()  # the model's own mask, pixel for pixel
        assert done.usage is not None and done.usage.output_tokens and done.finish_reason == "stop"
    bright = [m for c in stored.values() for m in (c.regions.masks if c.regions else [])][0]
    assert 0 < int(mask_to_array(bright).sum()) < bright.width * bright.height  # a real region, not all or nothing

    _run(tmp_path / "b", _seg_adapter(seg_model))
    again = completions(tmp_path / "b")
    assert {k: (c.text, c.regions) for k, c in again.items()} == {k: (c.text, c.regions) for k, c in stored.items()}


def test_max_tokens_reaches_the_models_own_generation_set_up(tmp_path: Path, seg_model: Path) -> None:
    _run(tmp_path / "a", _seg_adapter(seg_model, max_tokens=8))
    for done in completions(tmp_path / "a").values():
        # "<p> answer </p> [SEG] and <p> dark area </p> [SEG]<|end|>" cut at 8 tokens: the stop word and the
        # second [SEG] are gone, so one mask at most, and the answer says it was cut.
        assert done.finish_reason == "length" and done.usage is not None and 0 < (done.usage.output_tokens or 0) <= 8
        assert done.regions is None or len(done.regions.masks) == 1
        assert done.text is not None and "dark area" not in done.text


def test_a_predict_forward_failure_stays_with_its_case(seg_model: Path) -> None:
    good = _request("Where is the lesion?")
    base = request_for(CASE)
    # No <image> placeholder: the model's code cannot place the image and asserts, as UniBiomed's does.
    blind = ModelRequest("blind", base.case, replace(good.prompt, parts=(good.prompt.parts[0], TextPart("q"))))
    got = _generate(_seg_adapter(seg_model, image_placeholder="[image]"), [blind])
    assert got["blind"].error == "bad_request" and "AssertionError" in (got["blind"].error_message or "")
    two = ModelRequest("two", base.case, replace(good.prompt, parts=good.prompt.parts * 2))
    done = _generate(_seg_adapter(seg_model), [good, two])
    assert done[good.key].regions is not None and done[good.key].error is None
    assert done["two"].error == "bad_request" and "one image per case" in (done["two"].error_message or "")
