"""Token features of an open_clip CLIP, split at a frozen / trainable layer boundary.

Models that put new layers on top of a CLIP's tokens (the ImageReward-style ranking reward, RAHF) freeze
the bottom share of each tower: training caches the frozen blocks' outputs once per image and prompt and
runs only the top blocks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ClipTokens(nn.Module):
    """Token features of an open_clip ``CLIP`` model, split at a frozen/trainable layer boundary.

    ``image_bottom``/``text_bottom`` run the embeddings and the frozen blocks; ``image_top``/``text_top``
    the trainable blocks and the final norms. Composed, they give the towers' token outputs."""

    def __init__(self, model: nn.Module, freeze_fraction: float):
        super().__init__()
        visual = getattr(model, "visual", None)
        needed = ("token_embedding", "positional_embedding", "transformer", "ln_final", "attn_mask")
        if visual is None or not hasattr(visual, "transformer") or not all(hasattr(model, a) for a in needed):
            raise ValueError(f"the ranking reward needs an open_clip CLIP with a ViT vision tower and its own text "
                             f"transformer (e.g. ViT-B-32, ViT-L-14, shapes-clip); got {type(model).__name__}")
        self.model = model
        n_vis, n_txt = len(visual.transformer.resblocks), len(model.transformer.resblocks)
        self.n_frozen_image = min(n_vis, round(freeze_fraction * n_vis))
        self.n_frozen_text = min(n_txt, round(freeze_fraction * n_txt))
        model.requires_grad_(False)
        for block in list(visual.transformer.resblocks)[self.n_frozen_image:]:
            block.requires_grad_(True)
        for block in list(model.transformer.resblocks)[self.n_frozen_text:]:
            block.requires_grad_(True)
        visual.ln_post.requires_grad_(self.n_frozen_image < n_vis)   # the final norms train with the top blocks
        model.ln_final.requires_grad_(self.n_frozen_text < n_txt)

    @property
    def image_width(self) -> int:
        return int(self.model.visual.conv1.out_channels)

    @property
    def text_width(self) -> int:
        return int(self.model.token_embedding.embedding_dim)

    def image_bottom(self, pixels: torch.Tensor) -> torch.Tensor:
        """Normalised pixels (B, 3, S, S) → (B, 1 + patches, W_img) after the frozen blocks."""
        visual = self.model.visual
        x = visual._embeds(pixels)
        for block in list(visual.transformer.resblocks)[: self.n_frozen_image]:
            x = block(x)
        return x

    def image_top(self, x: torch.Tensor) -> torch.Tensor:
        visual = self.model.visual
        for block in list(visual.transformer.resblocks)[self.n_frozen_image:]:
            x = block(x)
        return visual.ln_post(x)

    def text_bottom(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L) → (B, L, W_txt) after the frozen blocks (causal mask, as CLIP's text tower)."""
        m = self.model
        x = m.token_embedding(tokens) + m.positional_embedding[: tokens.shape[1]]
        mask = m.attn_mask[: tokens.shape[1], : tokens.shape[1]] if m.attn_mask is not None else None
        for block in list(m.transformer.resblocks)[: self.n_frozen_text]:
            x = block(x, attn_mask=mask)
        return x

    def text_top(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        mask = m.attn_mask[: x.shape[1], : x.shape[1]] if m.attn_mask is not None else None
        for block in list(m.transformer.resblocks)[self.n_frozen_text:]:
            x = block(x, attn_mask=mask)
        return m.ln_final(x)

    def image_embed(self, tokens: torch.Tensor) -> torch.Tensor:
        """Top image tokens → unit-norm CLIP image embeddings (the tower's own pooling and projection)."""
        visual = self.model.visual
        pooled = tokens[:, 0] if getattr(visual, "pool_type", "tok") == "tok" else tokens[:, 1:].mean(1)
        return F.normalize(pooled @ visual.proj if visual.proj is not None else pooled, dim=-1)

    def text_embed(self, tokens: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        """Top text tokens → unit-norm CLIP text embeddings (read at the end-of-text token, projected)."""
        pooled = tokens[torch.arange(tokens.shape[0], device=tokens.device), token_ids.argmax(dim=-1)]
        proj = self.model.text_projection
        if proj is not None:
            pooled = proj(pooled) if isinstance(proj, nn.Linear) else pooled @ proj
        return F.normalize(pooled, dim=-1)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The parameters that training changes (top blocks and final norms), by state-dict key."""
        return {k: v for k, v in self.model.named_parameters() if v.requires_grad}
