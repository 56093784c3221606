"""Tiny Hugging Face models built offline for the hf adapter tests (torch and transformers needed).

- ``build_tiny_llava``: a real ``LlavaForConditionalGeneration`` (CLIP vision tower + Llama, two layers each,
  random weights) with a real ``LlavaProcessor`` (CLIP image processor, a byte-level BPE tokenizer trained here,
  a chat template), saved to a folder as any Hub model is: ``AutoModelForImageTextToText`` / ``AutoProcessor``
  load it with no download.
- ``build_seg_standin``: a folder holding a custom-code model (``config.json`` with an ``auto_map``, the
  modeling and configuration files of ``tests/hf_standin_seg``, weights, a tokenizer with UniBiomed's special
  tokens): ``AutoModel.from_pretrained(folder, trust_remote_code=True)`` loads it the way it loads UniBiomed.

``modules_cache`` points transformers' copy of custom code at a temporary folder instead of ~/.cache.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPImageProcessor,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)
from transformers import dynamic_module_utils as dynamic_modules

SEG_CODE = Path(__file__).parent / "hf_standin_seg"
# transformers 5 names the PIL-only image processor (the default one needs torchvision, absent here) apart.
IMAGE_PROCESSOR = getattr(transformers, "CLIPImageProcessorPil", CLIPImageProcessor)
CORPUS = [
    "Which option best describes the image? Options: 'benign', 'malignant', 'normal'. Answer with the option.",
    "The lesion is in the upper left of the ultrasound image; the liver, kidney and thyroid are visible.",
    "Please segment the abnormality. Please describe the findings in this ultrasound report.",
]
LLAVA_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def byte_bpe(specials: list[str], vocab_size: int = 400) -> Tokenizer:
    """A byte-level BPE tokenizer trained on a few sentences: every text encodes, and decodes back exactly."""
    tokenizer = Tokenizer(models.BPE(unk_token=None))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS, trainer)
    return tokenizer


def build_tiny_llava(folder: Path) -> Path:
    """A ~100k-parameter LLaVA with its processor in ``folder`` (images become 28x28, 4 image tokens)."""
    specials = ["<pad>", "<s>", "<|end|>", "<image>", "<|system|>", "<|user|>", "<|assistant|>"]
    bpe = byte_bpe(specials)
    ids = {s: bpe.token_to_id(s) for s in specials}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|end|>", pad_token="<pad>", bos_token="<s>")
    processor = LlavaProcessor(
        image_processor=IMAGE_PROCESSOR(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}),
        tokenizer=tokenizer,
        chat_template=LLAVA_TEMPLATE,
        patch_size=14,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
    )
    config = LlavaConfig(
        vision_config={
            "model_type": "clip_vision_model",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": 28,
            "patch_size": 14,
            "projection_dim": 32,
        },
        text_config={
            "model_type": "llama",
            "vocab_size": bpe.get_vocab_size(),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 8192,
            "bos_token_id": ids["<s>"],
            "eos_token_id": ids["<|end|>"],
            "pad_token_id": ids["<pad>"],
        },
        image_token_index=ids["<image>"],
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
    )
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|end|>"]
    model.generation_config.pad_token_id = ids["<pad>"]
    model.generation_config.repetition_penalty = 1.3  # a model default the run's settings must override
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def build_seg_standin(folder: Path) -> Path:
    """The predict_forward stand-in in ``folder``, as a Hub repository of custom code holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    for source in SEG_CODE.glob("*.py"):
        shutil.copy(source, folder / source.name)
    config = {
        "model_type": "u2eval_standin_seg",
        "architectures": ["StandinSegModel"],
        "auto_map": {
            "AutoConfig": "configuration_standin_seg.StandinSegConfig",
            "AutoModel": "modeling_standin_seg.StandinSegModel",
            "AutoModelForCausalLM": "modeling_standin_seg.StandinSegModel",
        },
        "template": "<|user|>\n{input}<|end|><|assistant|>\n",
        "stop_word": "<|end|>",
        "grid": 64,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    from safetensors.torch import save_file

    save_file({"rgb_weights": torch.tensor([0.299, 0.587, 0.114])}, str(folder / "model.safetensors"))
    specials = ["<|endoftext|>", "<|user|>", "<|assistant|>", "<|end|>", "[SEG]", "<p>", "</p>", "<vp>", "</vp>"]
    specials += ["<image>", "<img>", "</img>", "<IMG_CONTEXT>"]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=byte_bpe(specials), eos_token="<|end|>", pad_token="<|endoftext|>"
    )
    tokenizer.save_pretrained(folder)
    return folder


@contextmanager
def modules_cache(folder: Path) -> Iterator[None]:
    """transformers copies custom model code into its modules cache before importing it: use ``folder``."""
    saved = dynamic_modules.HF_MODULES_CACHE
    dynamic_modules.HF_MODULES_CACHE = str(folder)
    try:
        yield
    finally:
        dynamic_modules.HF_MODULES_CACHE = saved
        if str(folder) in sys.path:
            sys.path.remove(str(folder))
