"""A decoder-only vision-language model (LLaVA and its kin) as a captioner: ``AutoModelForImageTextToText`` + its
``AutoProcessor`` behind the interface the RLHF-V notebook and ``finetune.preference`` use.

The preference losses score ``question + response`` with the model's own tokenizer and pass ``pixel_values``; a
LLaVA-style model replaces each image placeholder token of ``input_ids`` by one image feature, so the question must
hold as many placeholders as the image has features. :attr:`LoadedVLM.question` is the prompt with its placeholder
expanded that way (counted by running the processor once), to put in every ``PreferencePair.question``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from feedbacklab.models import data as wdata

DEFAULT_PROMPT = "<image> describe the image ."


@dataclass
class LoadedVLM:
    """A decoder-only VLM, its tokenizer and processor, and the captioning ``prompt`` (with the image placeholder)."""

    model: Any
    tokenizer: Any
    processor: Any
    prompt: str = DEFAULT_PROMPT

    def __post_init__(self) -> None:
        token = getattr(self.processor, "image_token", None)
        if not token or token not in self.prompt:
            raise ValueError(f"the prompt {self.prompt!r} must contain the processor's image placeholder {token!r}")

    @property
    def image_token(self) -> str:
        return self.processor.image_token

    def _images(self, images: torch.Tensor) -> list:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
        return list(wdata.to_uint8(images))

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """float (B, 3, H, W) in [0, 1] → the image processor's pixel values."""
        out = self.processor.image_processor(images=self._images(images), return_tensors="pt")
        return out.pixel_values.to(self.model.device)

    @property
    def question(self) -> str:
        """The prompt with its placeholder repeated once per image feature, as the processor expands it, and a
        trailing space, so that ``question + response`` (what ``finetune.preference`` scores) splits between them."""
        probe = torch.zeros(1, 3, *self._probe_size())
        ids = self.processor(text=[self.prompt], images=self._images(probe), return_tensors="pt").input_ids[0]
        n = int((ids == self.tokenizer.convert_tokens_to_ids(self.image_token)).sum())
        if n < 1:
            raise ValueError(f"the processor put no {self.image_token!r} token in {self.prompt!r}")
        return self.prompt.replace(self.image_token, " ".join([self.image_token] * n)).rstrip() + " "

    @property
    def image_size(self) -> int:
        """The side its image processor resizes to (what to render images at)."""
        return self._probe_size()[0]

    def _probe_size(self) -> tuple[int, int]:
        size = getattr(self.processor.image_processor, "crop_size", None) or self.processor.image_processor.size
        return int(size.get("height", size.get("shortest_edge"))), int(size.get("width", size.get("shortest_edge")))

    @torch.no_grad()
    def caption(self, images: torch.Tensor, max_new_tokens: int = 20, batch_size: int = 32) -> list[str]:
        """Greedy answers to the prompt, one per image (the new tokens only)."""
        self.model.eval()
        out: list[str] = []
        for i in range(0, len(images), batch_size):
            chunk = images[i:i + batch_size]
            inputs = self.processor(text=[self.prompt] * len(chunk), images=self._images(chunk), return_tensors="pt",
                                    padding=True).to(self.model.device)
            ids = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False, num_beams=1)
            new = ids[:, inputs["input_ids"].shape[1]:]
            out += [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]
        return out

    def save(self, out_dir) -> Any:
        """``save_pretrained`` of model and processor into one directory (loads back with ``load_captioner``)."""
        self.model.save_pretrained(out_dir, safe_serialization=True)
        self.processor.save_pretrained(out_dir)
        return out_dir


def load_vlm(target: str, device: torch.device, local_files_only: bool = False, prompt: str = DEFAULT_PROMPT) -> LoadedVLM:
    """``AutoModelForImageTextToText`` and ``AutoProcessor`` from a directory or hub id."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(target, local_files_only=local_files_only).to(device).eval()
    processor = AutoProcessor.from_pretrained(target, local_files_only=local_files_only)
    return LoadedVLM(model=model, tokenizer=processor.tokenizer, processor=processor, prompt=prompt)
