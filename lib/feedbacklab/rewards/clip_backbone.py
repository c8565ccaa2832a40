"""A frozen OpenCLIP model used as a feature extractor by CLIP-based rewards.

Images go through the model's *own* preprocessing (size, resize mode, interpolation, mean/std
from ``open_clip.get_model_preprocess_cfg``) applied to tensors, so the same code serves the
tiny ShapesWorld CLIP and ViT-L-14. Text embeddings are cached per prompt.
"""
from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import torch


class ClipBackbone(torch.nn.Module):
    """Frozen ``open_clip`` model + tokenizer → L2-normalised image and text embeddings."""

    def __init__(self, model: torch.nn.Module, tokenizer: Any, name: str = "custom"):
        import open_clip

        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg.get("size", 224)
        self.image_size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        self.interpolation: str = cfg.get("interpolation", "bicubic")
        self.resize_mode: str = cfg.get("resize_mode", "shortest")
        self.register_buffer("mean", torch.tensor(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", open_clip.OPENAI_DATASET_STD)).view(1, 3, 1, 1))
        self._text_cache: dict[str, torch.Tensor] = {}

    @classmethod
    def from_loaded(cls, loaded: Any) -> "ClipBackbone":
        """Wrap a ``feedbacklab.models.LoadedClip`` (its open_clip model, tokenizer and name)."""
        return cls(loaded.model, loaded.tokenizer, name=loaded.name).to(next(loaded.model.parameters()).device)

    @classmethod
    def from_name(cls, name: str, device: str | torch.device = "auto") -> "ClipBackbone":
        """Load with ``feedbacklab.models.load_clip``: ``"shapes-clip"``, a directory, ``"ViT-L-14/openai"``."""
        from feedbacklab.models import load_clip

        return cls.from_loaded(load_clip(name, device=device))

    @classmethod
    def resolve(cls, clip: Any, device: str | torch.device = "auto") -> "ClipBackbone":
        """A backbone from a name, a ``LoadedClip`` or a backbone (returned as is)."""
        if isinstance(clip, ClipBackbone):
            return clip
        if isinstance(clip, str):
            return cls.from_name(clip, device)
        if hasattr(clip, "model") and hasattr(clip, "tokenizer"):
            return cls.from_loaded(clip)
        raise TypeError(f"clip must be a model name, a LoadedClip or a ClipBackbone, got {type(clip).__name__}")

    @property
    def embed_dim(self) -> int:
        """Width of the joint embedding space."""
        dim = getattr(getattr(self.model, "visual", None), "output_dim", None)
        if dim is None:
            with torch.no_grad():
                dim = self.model.encode_text(torch.as_tensor(self.tokenizer(["a"]), device=self.mean.device)).shape[-1]
        return int(dim)

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → the model's input size, normalised with its mean/std."""
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms import functional as TF

        mode = InterpolationMode(self.interpolation)
        x = images.to(self.mean.device, torch.float32)
        if self.resize_mode == "squash":
            x = TF.resize(x, list(self.image_size), interpolation=mode, antialias=True)
        else:  # "shortest": resize short side then crop; "longest": resize long side then pad (crop pads)
            h, w = x.shape[-2:]
            side = min(self.image_size)
            scale = side / (min(h, w) if self.resize_mode == "shortest" else max(h, w))
            new = [max(1, round(h * scale)), max(1, round(w * scale))]
            if new != [h, w]:
                x = TF.resize(x, new, interpolation=mode, antialias=True)
            x = TF.center_crop(x, list(self.image_size))
        return (x.clamp(0, 1) - self.mean) / self.std

    @torch.no_grad()
    def embed_images(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] → (B, D) unit-norm float32 embeddings."""
        out = [self.model.encode_image(self.preprocess(images[i : i + batch_size]), normalize=True).float()
               for i in range(0, images.shape[0], batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.embed_dim, device=self.mean.device)

    @torch.no_grad()
    def embed_texts(self, prompts: Sequence[str]) -> torch.Tensor:
        """Prompts → (B, D) unit-norm float32 embeddings; each distinct prompt is encoded once and cached."""
        missing = sorted({p for p in prompts if p not in self._text_cache})
        if missing:
            tokens = self.tokenizer(missing)
            tokens = tokens["input_ids"] if isinstance(tokens, dict) else tokens
            emb = self.model.encode_text(torch.as_tensor(tokens, device=self.mean.device), normalize=True).float()
            self._text_cache.update(zip(missing, emb))
        if not prompts:
            return torch.zeros(0, self.embed_dim, device=self.mean.device)
        return torch.stack([self._text_cache[p] for p in prompts]).to(self.mean.device)

    def _apply(self, fn, *args, **kwargs):  # keep the text cache on the model's device
        super()._apply(fn, *args, **kwargs)
        self._text_cache = {k: fn(v) for k, v in self._text_cache.items()}
        return self


class SavedHead:
    """``save`` / ``load`` of a reward that is a trained ``head`` on a frozen CLIP referenced by name (its config's
    ``clip``): ``reward_config.json`` + the head's safetensors. Subclasses set ``config_class`` and ``weights_file``."""

    config_class: type
    weights_file: str

    def save(self, path: str | Path) -> Path:
        """``reward_config.json`` + the head's weights (the CLIP is referenced by name)."""
        from .registry import write_saved

        return write_saved(path, self.name, asdict(self.config), self.head.state_dict(), self.weights_file)

    @classmethod
    def load(cls, path: str | Path, clip: Any = None, device: str = "auto"):
        """Read a reward saved by :meth:`save`; ``clip`` overrides the CLIP named in its config."""
        from .registry import read_saved

        config, state = read_saved(path, cls.name, cls.weights_file)
        config = cls.config_class(**config)
        reward = cls(ClipBackbone.resolve(clip if clip is not None else config.clip, device), config)
        reward.head.load_state_dict(state)
        return reward.eval()
