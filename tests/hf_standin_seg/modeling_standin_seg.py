"""A stand-in for UniBiomed's ``Sa2VAChatModel`` (custom code loaded with ``trust_remote_code``): the same
``predict_forward`` signature, return value and conventions, with real torch ops instead of InternVL + SAM2.

What it keeps from the real model (docs/hf-models.md): ``predict_forward(image=None, video=None, text=None,
past_text='', mask_prompts=None, tokenizer=None)``; ``preparing_for_generation(tokenizer, max_new_tokens,
torch_dtype)`` run on the first call unless called before; an image needs ``<image>`` in the text (the real
model's generate asserts it found image tokens); the text is wrapped in the model's own chat template and
tokenised; the answer is decoded with ``skip_special_tokens=False`` (so it holds ``[SEG]``, ``<p>``, ``</p>``
and the stop word), is cut at ``max_new_tokens``, and every ``[SEG]`` token in it gets one mask: a bool
numpy array of shape (1, H, W) at the image's own size, from low-resolution logits upsampled bilinearly and
thresholded after a sigmoid, as SAM2's are.

Its "model": the grey level (a weighted sum of R, G, B with the loaded ``rgb_weights``) at ``grid`` x
``grid``; the first mask is the brighter-than-average region, labelled with the answer, the second the darkest
region ("dark area"). The answer is an option of the prompt's own list (or a number), chosen by a hash of the
text and the pixels, so it does not depend on which run, chunk or process asks.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from .configuration_standin_seg import StandinSegConfig

_OPTIONS = re.compile(r"^Options: (.*)$", re.MULTILINE)


class StandinSegModel(PreTrainedModel):
    config_class = StandinSegConfig
    base_model_prefix = "standin"

    def __init__(self, config: StandinSegConfig, use_flash_attn: bool = True) -> None:
        super().__init__(config)
        self.rgb_weights = nn.Parameter(torch.ones(3) / 3)
        self.init_prediction_config = False
        self.calls = 0
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        pass  # the weights come from the checkpoint

    def preparing_for_generation(self, tokenizer: Any, max_new_tokens: int = 2048, torch_dtype: Any = None) -> None:
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.seg_token_idx = tokenizer.convert_tokens_to_ids("[SEG]")
        if torch_dtype is not None:
            self.to(torch_dtype)
        self.init_prediction_config = True

    def predict_forward(
        self,
        image: Any = None,
        video: Any = None,
        text: str | None = None,
        past_text: str = "",
        mask_prompts: Any = None,
        tokenizer: Any = None,
    ) -> dict[str, Any]:
        if not self.init_prediction_config:
            assert tokenizer
            self.preparing_for_generation(tokenizer=tokenizer)
        self.calls += 1
        assert text is not None
        if image is not None:
            assert "<image>" in text, "no image tokens in the input"  # the real generate's assertion
            text = text.replace("<image>", "<img><IMG_CONTEXT></img>")
        input_ids = self.tokenizer.encode(self.config.template.format(input=text))
        answer = self._answer(text, image)
        phrases = f"<p> {answer} </p> [SEG]" + (" and <p> dark area </p> [SEG]" if image is not None else "")
        ids = self.tokenizer.encode(phrases + self.config.stop_word, add_special_tokens=False)
        ids = ids[: self.max_new_tokens]
        prediction = self.tokenizer.decode(ids, skip_special_tokens=False).strip()
        if image is None:
            return {"prediction": prediction, "prediction_masks": []}
        n_seg = sum(1 for i in ids if i == self.seg_token_idx)
        masks = [self._mask(image, k) for k in range(n_seg)]
        assert input_ids  # the prompt was tokenised, as the real model's is
        return {"prediction": prediction, "prediction_masks": masks}

    def _grey(self, image: Any) -> torch.Tensor:
        pixels = torch.from_numpy(np.array(image.convert("RGB"))).to(self.device, self.dtype) / 255.0
        return (pixels * self.rgb_weights).sum(-1)

    def _answer(self, text: str, image: Any) -> str:
        digest = hashlib.sha256(text.encode())
        if image is not None:
            digest.update(image.convert("RGB").tobytes())
        value = int(digest.hexdigest()[:8], 16)
        options = _OPTIONS.search(text)
        choices = re.findall(r"'([^']*)'", options.group(1)) if options else []
        return choices[value % len(choices)] if choices else str(value % 100)

    def _mask(self, image: Any, index: int) -> np.ndarray:
        width, height = image.size
        grey = self._grey(image)[None, None]
        low = F.interpolate(grey, size=(self.config.grid, self.config.grid), mode="bilinear", align_corners=False)
        mean = low.mean()
        logits = (low - mean) * 50 if index == 0 else (0.5 * mean - low) * 50
        masks = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
        return (masks.sigmoid() > 0.5).cpu().numpy()
