"""CLIP score: cosine similarity of CLIP image and text embeddings — the baseline reward."""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .base import RewardModel, check_score_inputs, set_rows
from .clip_backbone import ClipBackbone
from .registry import register


class ClipScore(RewardModel):
    """``r(y, z) = cos(E_img(y), E_txt(z))`` with a frozen CLIP (Hessel et al.'s CLIPScore without rescaling)."""

    name = "clip-score"

    def __init__(self, backbone: ClipBackbone):
        super().__init__()
        self.backbone = backbone

    @torch.no_grad()
    def score(self, prompts: str | Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B,) cosine similarities in [-1, 1]."""
        prompts = check_score_inputs(prompts, images)
        return (self.backbone.embed_images(images) * self.backbone.embed_texts(prompts)).sum(-1)

    @torch.no_grad()
    def score_sets(self, prompt_sets: Sequence[Sequence[str]], images: torch.Tensor) -> torch.Tensor:
        """Each image embedded once and each distinct prompt once, then one cosine per (image, prompt) pair."""
        rows, flat = set_rows(prompt_sets, images)
        index = {p: i for i, p in enumerate(dict.fromkeys(flat))}
        text, img = self.backbone.embed_texts(list(index)), self.backbone.embed_images(images)
        cols = torch.tensor([index[p] for p in flat], device=img.device)
        return (img[rows.to(img.device)] * text[cols]).sum(-1)

    def gradient_map(self, prompts: str | Sequence[str], images: torch.Tensor, smooth: float = 2.0) -> torch.Tensor:
        """Where the similarity is most sensitive: ``|∂ cos / ∂ pixel|`` summed over channels, Gaussian-smoothed
        (``smooth`` px) and scaled to [0, 1] per image → (B, H, W). RichHF's misalignment-heatmap baseline."""
        from torchvision.transforms.functional import gaussian_blur

        prompts = check_score_inputs(prompts, images)
        x = images.detach().to(self.backbone.mean.device, torch.float32).requires_grad_(True)
        with torch.enable_grad():
            emb = self.backbone.model.encode_image(self.backbone.preprocess(x), normalize=True)
            (emb * self.backbone.embed_texts(prompts)).sum().backward()
        g = x.grad.abs().sum(1, keepdim=True)                                       # (B, 1, H, W)
        if smooth > 0:
            k = 2 * int(3 * smooth) + 1
            g = gaussian_blur(g, [k, k], [smooth, smooth])
        g = g[:, 0]
        top = g.flatten(1).amax(1).clamp_min(1e-12)
        return (g / top[:, None, None]).detach()


@register("clip-score")
def clip_score(clip: Any = "shapes-clip", device: str = "auto") -> ClipScore:
    """CLIP score with the CLIP named ``clip`` (``"shapes-clip"``, ``"ViT-L-14/openai"``), a LoadedClip or a backbone."""
    return ClipScore(ClipBackbone.resolve(clip, device))
