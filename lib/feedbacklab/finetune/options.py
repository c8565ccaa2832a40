"""Options every UNet fine-tuning method shares: full weights or a LoRA adapter, precision, device, seed."""
from __future__ import annotations

from dataclasses import dataclass

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")


@dataclass(kw_only=True)
class UNetOptions:
    """Base of each method's config dataclass (keyword-only, so a method's own fields keep their order)."""

    use_lora: bool = False                 # train a LoRA adapter (peft) instead of every UNet weight
    lora_rank: int = 4
    lora_alpha: int = 4
    lora_target_modules: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    mixed_precision: str = "auto"          # "auto": bf16 (or fp16) on CUDA, full precision elsewhere
    device: str = "auto"                   # CUDA → MPS → CPU
    seed: int = 0

    def check_unet_options(self) -> None:
        """Validate the shared options (call from the method config's ``__post_init__``)."""
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}")
        if self.lora_rank < 1 or self.lora_alpha < 1:
            raise ValueError(f"lora_rank and lora_alpha must be >= 1, got {self.lora_rank}, {self.lora_alpha}")
        self.lora_target_modules = tuple(self.lora_target_modules)
