"""In-process Hugging Face transformers: ``hf/<hf-id-or-local-path>``, or a preset naming ``adapter: hf``.

For models vLLM cannot serve. One model per run, loaded on first use (the dispatcher's preflight), on the GPU
when there is one, else on the CPU. The preset's ``mode`` says how a case is asked:

- ``generate`` (default): ``AutoModelForImageTextToText`` with ``AutoProcessor``. A case is a chat
  conversation rendered by the processor's chat template; ``batch_size`` of them, padded on the left (the
  models are decoder-only: every row must end where generation starts), go into one ``model.generate``.
- ``predict_forward``: a custom-code model (``trust_remote_code``) called the way Sa2VA and UniBiomed are,
  ``model.predict_forward(image=<PIL RGB>, text="<image>\\n...", tokenizer=<its tokenizer>)`` returning
  ``{"prediction": str, "prediction_masks": [bool array (1, H, W) per [SEG] token]}``. One case per call (the
  method takes one image); the masks become ``Completion.regions`` (source "native"), each labelled with the
  ``<p> phrase </p>`` just before its ``[SEG]`` when the answer has one. docs/hf-models.md has the facts.

Cases reach the adapter a chunk at a time (``chunk_size``, the dispatcher's batch): a chunk's answers are stored
when it ends. A batch that fails is halved until the failing case stands alone, so one bad case never costs its
chunk; a batch that runs out of GPU memory is halved the same way, and a case that does not fit even alone is an
infra error saying so. A CUDA error that leaves the device unusable fails the chunk (asked again next run).

Preset ``extra`` (all optional)::

    mode               generate | predict_forward
    revision           the weights' commit (pinned: recorded in the model identity)
    trust_remote_code  run the model repository's own code (needed by predict_forward models)
    device             cpu, cuda, cuda:1, ... (default: cuda when torch sees one, else cpu)
    dtype              bfloat16 | float16 | float32 (default: bfloat16 on a GPU, float32 on the CPU)
    chunk_size         cases per dispatcher batch (default 64)
    batch_size         conversations per generate call (default 8; predict_forward: always 1)
    model_kwargs       more from_pretrained arguments (attn_implementation, device_map, use_flash_attn, ...)
    processor_kwargs   from_pretrained arguments of the processor / tokenizer (e.g. max_pixels)
    generate_kwargs    more generation settings (e.g. repetition_penalty), on top of the run's
    chat_template      a Jinja file used instead of the processor's own template (generate)
    image_budget       u2eval.models.images.ImageBudget; none: every image goes in at its own size
    image_placeholder  what marks the image in predict_forward's text (default "<image>")
    seg_token          the token each mask answers to (default "[SEG]")
    strip_tokens       strings removed from a predict_forward answer before it is stored (end-of-turn and
                       grounding markup; the masks and their labels are read before)
    stop_words         what a predict_forward answer that ended by itself ends with (its decoded stop word or
                       end token); one that ends otherwise was cut at max_tokens ('length'). None given: unknown

Generation: the run's temperature, top_p and max_tokens (greedy at temperature 0), seeded per call with the run's
seed. The model's own ``generation_config`` only gives the end and padding tokens: its sampling defaults
(top_k, repetition_penalty, ...) are overridden, as vLLM's are, unless the preset's ``generate_kwargs`` sets them.

The model identity (``ModelInfo.revision``) is where the weights come from (``rev=``, ``local=`` or
``unpinned``) plus a hash of everything that changes answers (mode, dtype, kwargs, chat template, image budget,
text clean-up); chunk and batch sizes and the device are left out: a run resumed elsewhere reuses its answers.

torch and transformers (``u2eval[hf]``) are imported only when the model loads. This module is the adapter
(batching, isolation of failing cases, the dispatcher's calls); ``hf_convert`` holds the settings and the pure
conversions, ``hf_loading`` the model, its device and its errors.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from model_adapters._base import Identified
from model_adapters._local import EngineThread, LoadOnce, input_failure, parse_settings, probe_prompt, read_template
from model_adapters._wire import one_line
from model_adapters.hf_convert import (
    HFSettings,
    Prepared,
    Ready,
    completion,
    from_prediction,
    generation_kwargs,
    make_ready,
    model_identity,
    prepare,
    split_generated,
)
from model_adapters.hf_loading import (
    Loaded,
    ModelLoader,
    case_failure,
    free_memory,
    is_fatal,
    is_oom,
    load_model,
    resolve_device,
    to_device,
)
from u2eval.errors import AdapterError, ConfigError
from u2eval.models.protocol import AdapterOptions, ModelRequest
from u2eval.records import (
    Completion,
    GenerationConfig,
    ModelInfo,
    Usage,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class HFAdapter(Identified):
    """Chunks of cases through one in-process transformers model."""

    def __init__(
        self,
        model: str,
        options: AdapterOptions,
        settings: HFSettings,
        loader: ModelLoader = load_model,
        device: tuple[str, str] | None = None,
    ) -> None:
        if not model:
            raise ConfigError("hf needs a model: hf/<hf-id> or hf/<local path>, e.g. hf/llava-hf/llava-1.5-7b-hf")
        self._model = model
        self._settings = settings
        self._generation = options.generation
        self._text_only = options.text_only
        self._seed = options.generation.seed if options.generation.seed is not None else options.seed
        self._template = read_template(settings.chat_template)
        self._device, self._dtype = device or resolve_device(settings)
        self._loaded: LoadOnce[Loaded] = LoadOnce(
            lambda: loader(model, settings, self._device, self._dtype, self._generation),
            f"hf/{model}: the model did not load on {self._device}",
        )
        self._thread = EngineThread("u2eval-hf")
        revision = model_identity(model, settings, self._dtype, self._template)
        super().__init__(ModelInfo(adapter="hf", model=model, revision=revision), settings.chunk_size)

    # Everything below that touches the model runs on the engine thread.

    def _generate(self, batch: Sequence[Ready], config: GenerationConfig) -> list[tuple[str, Usage, str, float]]:
        """(text, usage, finish reason, latency share) per conversation of one ``model.generate`` call."""
        import torch
        import transformers

        loaded = self._loaded.get()
        template = {"chat_template": self._template} if self._template is not None else {}
        texts = [
            loaded.processor.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False, **template)
            for r in batch
        ]
        images = [img for r in batch for img in r.images]
        inputs = loaded.processor(text=texts, images=images or None, padding=True, return_tensors="pt")
        inputs = {k: to_device(v, loaded) for k, v in inputs.items()}
        gen_config = transformers.GenerationConfig(
            **generation_kwargs(config, self._settings.generate_kwargs), pad_token_id=loaded.pad_id
        )
        started = time.perf_counter()
        torch.manual_seed(self._seed)
        with torch.inference_mode():
            output = loaded.model.generate(**inputs, generation_config=gen_config)
        share = round((time.perf_counter() - started) / len(batch), 4)
        prompt_length = 0 if getattr(loaded.model.config, "is_encoder_decoder", False) else inputs["input_ids"].shape[1]
        results = []
        for row in range(len(batch)):
            tokens, generated, finish = split_generated(
                output[row, prompt_length:].tolist(), loaded.stop_ids, config.max_tokens
            )
            text = loaded.tokenizer.decode(tokens, skip_special_tokens=True)
            usage = Usage(input_tokens=int(inputs["attention_mask"][row].sum()), output_tokens=generated)
            results.append((text, usage, finish, share))
        return results

    def _predict(self, ready: Ready) -> tuple[Any, int | None, float]:
        """(what predict_forward returned, the answer's length in tokens, seconds) for one case."""
        import torch

        loaded = self._loaded.get()
        started = time.perf_counter()
        torch.manual_seed(self._seed)
        with torch.inference_mode():
            raw = loaded.model.predict_forward(
                image=ready.images[0] if ready.images else None, text=ready.text, tokenizer=loaded.tokenizer
            )
        latency = round(time.perf_counter() - started, 4)
        prediction = raw.get("prediction") if isinstance(raw, Mapping) else None
        tokens = None
        if isinstance(prediction, str):
            tokens = len(loaded.tokenizer.encode(prediction, add_special_tokens=False))
        return raw, tokens, latency

    def _isolating(self, items: list[T], call: Callable[[list[T]], Sequence[R]]) -> list[R | Exception]:
        """``call(items)``, halving a batch that fails until each failure stands alone (as its exception)."""
        if not items:
            return []
        try:
            return list(call(items))
        except (ConfigError, AdapterError):
            raise
        except Exception as exc:
            if is_fatal(exc):
                raise
            if is_oom(exc):
                free_memory()
                if len(items) > 1:
                    log.warning("hf: a batch of %d ran out of memory; halving it (lower batch_size)", len(items))
            if len(items) == 1:
                return [exc]
            middle = len(items) // 2
            return self._isolating(items[:middle], call) + self._isolating(items[middle:], call)

    def _answer(self, chunk: Sequence[Prepared]) -> list[Completion]:
        completions = [input_failure(p.request, p.error) for p in chunk if p.error is not None]
        sending = [p for p in chunk if p.ready is not None]
        try:
            if self._settings.mode == "predict_forward":
                completions += [self._answer_predicted(p) for p in sending]
            else:
                completions += self._answer_generated(sending)
        except (ConfigError, AdapterError):
            raise
        except Exception as exc:  # a CUDA fault: the chunk's cases are infra errors, asked again next run
            message = one_line(str(exc) or type(exc).__name__, 400)
            raise AdapterError(f"transformers failed: {message}", kind="server", retryable=False) from exc
        return completions

    def _answer_generated(self, sending: Sequence[Prepared]) -> list[Completion]:
        size = self._settings.batch_size
        outputs: list[tuple[str, Usage, str, float] | Exception] = []
        for start in range(0, len(sending), size):
            batch = [p.ready for p in sending[start : start + size] if p.ready is not None]
            outputs += self._isolating(batch, lambda b: self._generate(b, self._generation))
        completions = []
        for prepared, output in zip(sending, outputs, strict=True):
            if isinstance(output, Exception):
                completions.append(case_failure(prepared.request, output))
                continue
            text, usage, finish, share = output
            sent = prepared.ready.sent if prepared.ready is not None else None
            completions.append(
                completion(prepared.request, text, usage=usage, finish=finish, sent=sent, latency_s=share)
            )
        return completions

    def _answer_predicted(self, prepared: Prepared) -> Completion:
        assert prepared.ready is not None
        (result,) = self._isolating([prepared.ready], lambda b: [self._predict(b[0])])
        if isinstance(result, Exception):
            return case_failure(prepared.request, result)
        raw, tokens, latency = result
        return from_prediction(
            raw,
            prepared.request,
            self._settings,
            sent=prepared.ready.sent,
            output_tokens=tokens,
            latency_s=latency,
        )

    async def generate(self, requests: Sequence[ModelRequest]) -> list[Completion]:
        job = tuple(r.key for r in requests)
        chunk = functools.partial(prepare, requests, self._settings)
        return await self._thread.run(job, chunk, self._answer)

    async def preflight(self) -> None:
        """Load the model (minutes for a large one), then answer one small image: a model without vision, a
        template that does not render or a predict_forward of another shape fails here, before any case."""
        probe = probe_prompt(self._text_only)

        def check() -> None:
            ready = make_ready(probe, self._settings)
            try:
                if self._settings.mode == "generate":
                    self._generate([ready], self._generation.model_copy(update={"max_tokens": 1}))
                    return
                raw, _, _ = self._predict(ready)
            except (ConfigError, AdapterError):
                raise
            except Exception as exc:
                hint = "; out of memory: lower the image budget or use a larger GPU" if is_oom(exc) else ""
                raise ConfigError(
                    f"hf/{self._model}: a one-image test case failed ({one_line(str(exc), 300)}){hint}"
                ) from exc
            if not (isinstance(raw, Mapping) and isinstance(raw.get("prediction"), str)):
                raise ConfigError(
                    f"hf/{self._model}: predict_forward returned {type(raw).__name__}, not a dict with a "
                    "'prediction' text (and 'prediction_masks')"
                )

        await self._thread.run(("preflight",), lambda: None, lambda _: check())

    async def aclose(self) -> None:
        self._thread.close()
        if self._loaded.loaded:
            self._loaded.drop()
            free_memory()


def create(model: str, options: AdapterOptions) -> HFAdapter:
    for name in ("torch", "transformers"):
        if importlib.util.find_spec(name) is None:  # importing them here would cost seconds of start-up
            raise ImportError(f"{name} is not installed", name=name)
    return HFAdapter(model, options, parse_settings("hf", options.extra, HFSettings))
