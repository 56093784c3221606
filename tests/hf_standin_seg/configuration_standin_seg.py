"""The config class of the predict_forward stand-in (copied into a model folder, loaded through ``auto_map``)."""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig


class StandinSegConfig(PretrainedConfig):
    """``template``: the chat wrapping the model puts around the text itself (UniBiomed's phi3_chat), and the
    stop word it ends its answers with."""

    model_type = "u2eval_standin_seg"

    def __init__(
        self,
        template: str = "<|user|>\n{input}<|end|><|assistant|>\n",
        stop_word: str = "<|end|>",
        grid: int = 64,
        **kwargs: Any,
    ) -> None:
        self.template = template
        self.stop_word = stop_word
        self.grid = grid
        super().__init__(**kwargs)
