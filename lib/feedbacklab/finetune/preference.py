"""Preference fine-tuning of a captioner / VLM on corrected responses: DPO, RLHF-V's dense DPO, and SFT.

A pair is one image with a chosen response ``y_w`` (the annotator's correction) and a rejected one ``y_l``
(the model's original), and the character spans where they differ. The frozen starting model is the reference.

- DPO (Rafailov et al. 2023): ``−log σ(β·[log π(y_w|x) − log π_ref(y_w|x)] − β·[log π(y_l|x) − log π_ref(y_l|x)])``
  with the summed token log-probability of each response.
- Dense DPO (RLHF-V, Yu et al. 2024, Eq. 2): the same loss with the response log-probability
  ``(1/N)[Σ_{y_u} log p + γ Σ_{y_c} log p]``, ``N = |y_u| + γ|y_c|``: tokens of the changed segments ``y_c``
  weigh γ times the unchanged ones ``y_u``. γ = 1 is length-normalised DPO. Paper: β = 0.5, γ = 5.
- SFT: token-averaged cross-entropy on the chosen responses.
- Optional terms of mDPO (Wang et al. 2024), for DPO's "unconditional preference": with captions that differ in a
  word or two, DPO can learn which words to say whatever the image shows (a language prior) instead of looking.
  ``conditional_weight`` adds CoPO, the same preference on the *image*: ``−log σ(β·[log π(y_w|x) − log π_ref(y_w|x)]
  − β·[log π(y_w|x̃) − log π_ref(y_w|x̃)])`` with ``x̃`` a random crop keeping a small part of ``x`` (mDPO keeps less
  than 20 %), resized back; ``anchor_weight`` adds AncPO, ``−log σ(β·[log π(y_w|x) − log π_ref(y_w|x)])``, which
  keeps the chosen response's implicit reward above 0.

The model-specific part is one function, ``response_logits``: an encoder–decoder (``VisionEncoderDecoderModel``,
the shipped captioners) scores ``labels`` directly; a decoder-only VLM scores the question followed by the
response, its logits shifted by one. Everything else works on (logits, labels, changed-token mask).
"""
from __future__ import annotations

import copy
import math
import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from feedbacklab.finetune import distributed

METHODS = ("sft", "dpo", "dense-dpo")
IGNORE = -100


# ------------------------------------------------------------------ config and data

@dataclass
class PreferenceConfig:
    """One config for the three methods, so they run at equal data, steps and learning rate."""

    method: str = "dense-dpo"      # "sft", "dpo" (summed log-probs) or "dense-dpo" (RLHF-V)
    beta: float = 0.5              # DPO temperature β (RLHF-V: 0.5)
    gamma: float = 5.0             # dense DPO weight of changed tokens γ >= 1 (RLHF-V: 5)
    sft_weight: float = 0.0        # DPO methods: + this × the chosen captions' token-mean NLL (RPO, Pang et al. 2024;
                                   # trl's rpo_alpha): keeps log π(y_w) from falling with log π(y_l) when the two
                                   # differ in a word or two (likelihood displacement, Razin et al. 2024). 0: off
    conditional_weight: float = 0.0  # DPO methods: + this × mDPO's conditional (image) preference term; 0: off
    anchor_weight: float = 0.0     # DPO methods: + this × mDPO's anchor −log σ(β·(log π(y_w) − log π_ref(y_w))); 0: off
    crop_keep: tuple[float, float] = (0.04, 0.2)  # the conditional term's x̃: a crop keeping this share of the area
    learning_rate: float = 1e-4    # AdamW
    steps: int = 200               # optimiser steps
    batch_size: int = 16           # pairs per step
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0     # gradient clipping (0: none)
    warmup_steps: int = 0          # linear learning-rate warm-up
    disable_dropout: bool = True   # train with dropout off, so policy and reference agree at step 0 (trl's default)
    log_every: int = 10            # history rows every this many steps
    device: str = "auto"           # CUDA → MPS → CPU
    seed: int = 0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not (isinstance(self.beta, (int, float)) and self.beta > 0):
            raise ValueError(f"beta must be > 0 (RLHF-V uses 0.5), got {self.beta!r}")
        if not (isinstance(self.gamma, (int, float)) and self.gamma >= 1):
            raise ValueError(f"gamma must be >= 1 (1: length-normalised DPO; RLHF-V uses 5), got {self.gamma!r}")
        for name in ("steps", "batch_size", "log_every"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if not (isinstance(self.sft_weight, (int, float)) and self.sft_weight >= 0):
            raise ValueError(f"sft_weight must be >= 0 (0: plain DPO), got {self.sft_weight!r}")
        for name in ("conditional_weight", "anchor_weight"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"{name} must be >= 0 (0: off), got {value!r}")
            if value and self.method == "sft":
                raise ValueError(f"{name} is a term of the DPO methods ('dpo', 'dense-dpo'), not of 'sft'")
        lo, hi = self.crop_keep
        if not 0 < lo <= hi < 1:
            raise ValueError(f"crop_keep must be (low, high) shares of the image area with 0 < low <= high < 1, "
                             f"got {self.crop_keep!r}")
        if self.learning_rate <= 0 or self.warmup_steps < 0 or self.max_grad_norm < 0:
            raise ValueError("need learning_rate > 0, warmup_steps >= 0 and max_grad_norm >= 0")


@dataclass(frozen=True)
class PreferencePair:
    """One image with a chosen (corrected) and a rejected (original) response and their changed character spans."""

    image: torch.Tensor                        # (3, H, W) in [0, 1]
    chosen: str
    rejected: str | None                       # None: an SFT example (``sft_examples``), trained by method "sft" only
    chosen_spans: tuple[tuple[int, int], ...] = ()
    rejected_spans: tuple[tuple[int, int], ...] = ()
    question: str = ""                         # the instruction, for VLMs that take one
    item_id: str = ""

    def __post_init__(self) -> None:
        if self.rejected is None and self.rejected_spans:
            raise ValueError(f"pair {self.item_id or '?'}: rejected_spans given without a rejected response")
        if self.chosen == self.rejected:
            raise ValueError(f"pair {self.item_id or '?'}: chosen and rejected responses are identical "
                             f"({self.chosen!r}); a preference pair needs two different responses")
        for name, text in (("chosen_spans", self.chosen), ("rejected_spans", self.rejected or "")):
            for s, e in getattr(self, name):
                if not 0 <= s <= e <= len(text):
                    raise ValueError(f"pair {self.item_id or '?'}: {name} span ({s}, {e}) is outside the "
                                     f"response of {len(text)} characters")


def sft_examples(images: torch.Tensor | Sequence[torch.Tensor], responses: Sequence[str], question: str = "",
                 item_ids: Sequence[str] | None = None) -> list[PreferencePair]:
    """Supervised examples (image, response) for ``method="sft"``: e.g. RLHF-V's clean-caption remedy, SFT on the
    true captions of uncropped images. Any captioner or VLM ``preference_finetune`` takes trains on them."""
    if len(images) != len(responses):
        raise ValueError(f"need one image per response, got {len(images)} images and {len(responses)} responses")
    ids = list(item_ids) if item_ids is not None else [f"sft-{i}" for i in range(len(responses))]
    return [PreferencePair(img, r, None, question=question, item_id=i) for img, r, i in zip(images, responses, ids)]


def pairs_from_corrections(corrections: Sequence[Any], images: torch.Tensor | Sequence[torch.Tensor],
                           question: str = "") -> list[PreferencePair]:
    """``(y_w corrected, y_l original)`` pairs from ``CaptionCorrection`` records, one image each (same order).

    Records the annotator left unchanged carry no preference and are skipped.
    """
    if len(corrections) != len(images):
        raise ValueError(f"need one image per correction, got {len(corrections)} corrections and {len(images)} images")
    return [PreferencePair(img, c.corrected, c.original, tuple(c.corrected_char_spans), tuple(c.original_char_spans),
                           question, c.item_id) for c, img in zip(corrections, images) if c.corrected != c.original]


# ------------------------------------------------------------------ losses (pure functions of log-probs)

def token_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) per position, 0 where ``labels == -100``.  logits (B, L, V), labels (B, L) → (B, L)."""
    mask = labels != IGNORE
    logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return logp * mask


def sequence_logprob(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ_i log p(y_i): the response log-probability standard DPO uses.  (B, L) → (B,)."""
    return (token_logps * mask).sum(-1)


def dense_logprob(token_logps: torch.Tensor, mask: torch.Tensor, changed: torch.Tensor, gamma: float) -> torch.Tensor:
    """RLHF-V's ``(1/N)[Σ_{y_u} log p + γ Σ_{y_c} log p]``, ``N = |y_u| + γ|y_c|``.  (B, L) → (B,)."""
    weights = mask.float() * (1 + (gamma - 1) * (changed & mask).float())
    return (token_logps * weights).sum(-1) / weights.sum(-1).clamp(min=1e-8)


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair DPO loss and the implicit rewards ``β·(log π − log π_ref)`` of chosen and rejected.  All (B,)."""
    chosen_reward = beta * (policy_chosen - ref_chosen)
    rejected_reward = beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(chosen_reward - rejected_reward), chosen_reward.detach(), rejected_reward.detach()


def response_logprob(token_logps: torch.Tensor, mask: torch.Tensor, changed: torch.Tensor,
                     config: PreferenceConfig) -> torch.Tensor:
    """The response log-probability the configured method compares: summed (DPO) or dense (dense DPO)."""
    if config.method == "dense-dpo":
        return dense_logprob(token_logps, mask, changed, config.gamma)
    return sequence_logprob(token_logps, mask)


def conditional_negative(image: torch.Tensor, seed: int, keep: tuple[float, float] = (0.04, 0.2)) -> torch.Tensor:
    """mDPO's rejected image ``x̃``: a random crop of ``image`` (3, H, W) keeping a share in ``keep`` of its area (aspect
    ratio in [1/2, 2]), resized back to (H, W) bilinearly; the same ``seed`` gives the same crop."""
    g = torch.Generator().manual_seed(int(seed))
    _, h, w = image.shape
    area = (keep[0] + (keep[1] - keep[0]) * torch.rand((), generator=g).item()) * h * w
    ratio = math.exp(math.log(0.5) + math.log(4.0) * torch.rand((), generator=g).item())
    ch = max(1, min(h, round(math.sqrt(area / ratio))))
    cw = max(1, min(w, round(math.sqrt(area * ratio))))
    y0 = int(torch.randint(h - ch + 1, (), generator=g))
    x0 = int(torch.randint(w - cw + 1, (), generator=g))
    crop = image[None, :, y0:y0 + ch, x0:x0 + cw].float()
    return F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False)[0].clamp(0, 1)


def _negative_seed(pair: "PreferencePair", seed: int) -> int:
    """A per-pair seed of its conditional negative, the same in every step and in the reference pass."""
    return zlib.crc32(f"{seed}|{pair.item_id}|{pair.chosen}|{pair.rejected}".encode())


def with_conditional_negatives(pairs: Sequence["PreferencePair"], config: PreferenceConfig) -> list["PreferencePair"]:
    """The pairs with their images replaced by :func:`conditional_negative` crops (their chosen responses kept)."""
    return [replace(p, image=conditional_negative(p.image, _negative_seed(p, config.seed), config.crop_keep))
            for p in pairs]


# ------------------------------------------------------------------ the model-specific part

@dataclass
class EncodedResponses:
    """Tokenised responses: ``labels`` (B, L) with −100 outside the response, ``changed`` (B, L) bool."""

    labels: torch.Tensor
    changed: torch.Tensor
    decoder_attention_mask: torch.Tensor | None = None   # encoder–decoder: BOS + response tokens
    input_ids: torch.Tensor | None = None                # decoder-only: question + response tokens
    attention_mask: torch.Tensor | None = None

    def to(self, device: torch.device) -> "EncodedResponses":
        return EncodedResponses(*(None if t is None else t.to(device) for t in
                                  (self.labels, self.changed, self.decoder_attention_mask, self.input_ids,
                                   self.attention_mask)))


def _changed_mask(offsets: torch.Tensor, spans: Sequence[Sequence[tuple[int, int]]], shift: Sequence[int]) -> torch.Tensor:
    """Tokens whose character range overlaps a changed span.  offsets (B, L, 2) → (B, L) bool."""
    changed = torch.zeros(offsets.shape[:2], dtype=torch.bool)
    for b, row in enumerate(spans):
        for s, e in row:
            if e > s:
                s, e = s + shift[b], e + shift[b]
                changed[b] |= (offsets[b, :, 0] < e) & (offsets[b, :, 1] > s) & (offsets[b, :, 1] > offsets[b, :, 0])
    return changed


def encode_responses(tokenizer: Any, responses: Sequence[str], spans: Sequence[Sequence[tuple[int, int]]],
                     is_encoder_decoder: bool = True, questions: Sequence[str] | None = None,
                     max_length: int | None = None) -> EncodedResponses:
    """Tokenise responses (after their question for decoder-only models) with the changed-token mask.

    Raises before any training when a response (with its question) is longer than ``max_length`` (default: the
    tokenizer's ``model_max_length``): truncating it would silently drop the end of a correction.
    """
    limit = max_length or tokenizer.model_max_length
    questions = list(questions) if questions is not None else [""] * len(responses)
    if is_encoder_decoder:
        texts, shift = list(responses), [0] * len(responses)
    else:
        texts = [q + r for q, r in zip(questions, responses)]
        shift = [len(q) for q in questions]
    enc = tokenizer(texts, padding=True, return_offsets_mapping=True, return_tensors="pt")
    lengths = enc.attention_mask.sum(-1)
    too_long = [i for i, n in enumerate(lengths.tolist()) if n > limit]
    if too_long:
        i = too_long[0]
        raise ValueError(f"{len(too_long)} response(s) are longer than the model's maximum of {limit} tokens "
                         f"(e.g. {int(lengths[i])} tokens: {texts[i]!r}); shorten them or raise max_length")
    offsets = enc.offset_mapping
    changed = _changed_mask(offsets, spans, shift)
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, IGNORE)
    if is_encoder_decoder:
        start = torch.ones(len(texts), 1, dtype=torch.long)
        dec_mask = torch.cat([start, enc.attention_mask[:, :-1]], 1)  # BOS + all but the last response token
        return EncodedResponses(labels, changed, decoder_attention_mask=dec_mask)
    # the response: from its first token on, including special tokens the tokenizer appends after it (EOS, whose
    # character offsets are (0, 0)), so the model also learns where the response ends, as the encoder-decoder does
    starts = offsets[:, :, 1] > torch.tensor(shift).unsqueeze(1)
    first = torch.where(starts.any(1), starts.float().argmax(1), torch.full((len(texts),), offsets.shape[1]))
    in_response = (torch.arange(offsets.shape[1])[None] >= first[:, None]) & (enc.attention_mask == 1)
    labels = labels.masked_fill(~in_response, IGNORE)
    return EncodedResponses(labels, changed & in_response, input_ids=enc.input_ids, attention_mask=enc.attention_mask)


def response_logits(model: Any, pixel_values: torch.Tensor, enc: EncodedResponses) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits aligned with their labels, and the labels and changed mask to use: ``(B, L, V), (B, L), (B, L)``."""
    if getattr(model.config, "is_encoder_decoder", False):
        out = model(pixel_values=pixel_values, labels=enc.labels, decoder_attention_mask=enc.decoder_attention_mask)
        return out.logits, enc.labels, enc.changed
    out = model(input_ids=enc.input_ids, attention_mask=enc.attention_mask, pixel_values=pixel_values)
    return out.logits[:, :-1], enc.labels[:, 1:], enc.changed[:, 1:]


# ------------------------------------------------------------------ training

@dataclass
class PreferenceResult:
    """The fine-tuned captioner (a copy; the input is untouched) and one history row per ``log_every`` steps."""

    captioner: Any
    history: list[dict[str, float]] = field(default_factory=list)
    config: PreferenceConfig | None = None
    wall_s: float = 0.0
    selected_step: int | None = None   # with ``select_by``: the step whose weights ``captioner`` holds


def _scores(model: Any, captioner: Any, pairs: Sequence[PreferencePair], side: str,
            config: PreferenceConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token log-probs, mask and changed mask of one side ("chosen" / "rejected") of a batch of pairs."""
    is_ed = bool(getattr(model.config, "is_encoder_decoder", False))
    enc = encode_responses(captioner.tokenizer, [getattr(p, side) for p in pairs],
                           [getattr(p, f"{side}_spans") for p in pairs], is_encoder_decoder=is_ed,
                           questions=[p.question for p in pairs]).to(model.device)
    pixels = captioner.pixel_values(torch.stack([p.image for p in pairs]))
    logits, labels, changed = response_logits(model, pixels, enc)
    return token_logprobs(logits, labels), labels != IGNORE, changed


def preference_loss(model: Any, captioner: Any, pairs: Sequence[PreferencePair], config: PreferenceConfig,
                    ref: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """The configured method's mean loss over ``pairs`` and its logged statistics; ``ref`` = reference log-probs.
    Data-parallel, each process scores its shard of ``pairs``; the loss is still the whole batch's."""
    n, mine = len(pairs), distributed.shard(len(pairs))
    chosen_lp, chosen_mask, chosen_changed = _scores(model, captioner, pairs[mine], "chosen", config)
    nll = -(distributed.sum_across(chosen_lp.sum()) / distributed.sum_across(chosen_mask.sum()).clamp(min=1))
    if config.method == "sft":
        return nll, {"loss": float(nll.detach())}
    rejected_lp, rejected_mask, rejected_changed = _scores(model, captioner, pairs[mine], "rejected", config)
    pol_w = distributed.gather(response_logprob(chosen_lp, chosen_mask, chosen_changed, config), n)
    pol_l = distributed.gather(response_logprob(rejected_lp, rejected_mask, rejected_changed, config), n)
    ref_w, ref_l = (ref[0], ref[1]) if ref is not None else (pol_w.detach(), pol_l.detach())
    losses, r_w, r_l = dpo_loss(pol_w, pol_l, ref_w.to(pol_w.device), ref_l.to(pol_l.device), config.beta)
    loss = losses.mean() + config.sft_weight * nll if config.sft_weight else losses.mean()
    extra: dict[str, float] = {}
    if config.conditional_weight:  # mDPO's CoPO: the same y_w, preferred on the true image over a crop of it
        crop_lp, crop_mask, crop_changed = _scores(model, captioner, with_conditional_negatives(pairs[mine], config),
                                                   "chosen", config)
        pol_c = distributed.gather(response_logprob(crop_lp, crop_mask, crop_changed, config), n)
        ref_c = ref[2] if ref is not None and len(ref) > 2 else pol_c.detach()
        cond, _, r_c = dpo_loss(pol_w, pol_c, ref_w.to(pol_w.device), ref_c.to(pol_c.device), config.beta)
        loss = loss + config.conditional_weight * cond.mean()
        extra |= {"conditional_loss": float(cond.mean().detach()), "crop_reward": float(r_c.mean())}
    if config.anchor_weight:  # mDPO's AncPO: the chosen response's implicit reward kept above 0
        anchor = -F.logsigmoid(config.beta * (pol_w - ref_w.to(pol_w.device)))
        loss = loss + config.anchor_weight * anchor.mean()
        extra["anchor_loss"] = float(anchor.mean().detach())
    return loss, {"loss": float(loss.detach()), "chosen_nll": float(nll.detach()),
                  "reward_accuracy": float((r_w > r_l).float().mean()),
                  "reward_margin": float((r_w - r_l).mean()), "chosen_reward": float(r_w.mean()),
                  "rejected_reward": float(r_l.mean())} | extra


@torch.no_grad()
def reference_logprobs(captioner: Any, pairs: Sequence[PreferencePair], config: PreferenceConfig,
                       batch_size: int = 128) -> tuple[torch.Tensor, ...]:
    """The frozen start's response log-probabilities of every pair, chosen and rejected (computed once, as RLHF-V;
    data-parallel, each process scores its shard of the pairs); with ``conditional_weight`` also the chosen response
    on each pair's conditional negative image."""
    model = captioner.model.eval()
    mine = distributed.shard(len(pairs))
    w, l_, c = [], [], []
    for i in range(mine.start, mine.stop, batch_size):
        chunk = pairs[i:min(i + batch_size, mine.stop)]
        sides = [("chosen", chunk, w), ("rejected", chunk, l_)]
        if config.conditional_weight:
            sides.append(("chosen", with_conditional_negatives(chunk, config), c))
        for side, items, out in sides:
            lp, mask, changed = _scores(model, captioner, items, side, config)
            out.append(response_logprob(lp, mask, changed, config).cpu())
    return tuple(distributed.gather(torch.cat(x), len(pairs)) for x in ((w, l_, c) if c else (w, l_)))


def preference_finetune(captioner: Any, pairs: Sequence[PreferencePair], config: PreferenceConfig,
                        progress: bool = True, callback: Callable[[int, dict[str, float], Any], None] | None = None,
                        select_by: Callable[[Any], float] | None = None) -> PreferenceResult:
    """Fine-tune a copy of ``captioner`` (model + tokenizer + processor) on ``pairs`` with ``config.method``.

    Every method sees the same pairs in the same seeded order: ``steps`` batches of ``batch_size`` pairs drawn
    from reshuffled passes over the data; the reference is the frozen starting model. ``callback(step, row,
    captioner)`` runs after each history row with the policy in eval mode. ``select_by(captioner) -> float`` (lower
    is better, e.g. hallucination on a dev set) is computed at step 0 and at each history row, stored in the row as
    ``selected_metric``, and the best weights are returned (checkpoint selection; the last step's otherwise).
    Data-parallel (:mod:`distributed`), each process scores its shard of every batch; the callbacks run on each.
    """
    from tqdm.auto import tqdm

    from feedbacklab.device import resolve_device

    if not pairs:
        raise ValueError("no preference pairs: every correction left its caption unchanged")
    bad = [p for p in pairs if not isinstance(p, PreferencePair)]
    if bad:
        raise TypeError(f"pairs must be PreferencePair (see pairs_from_corrections), got {type(bad[0]).__name__}")
    unpaired = sum(p.rejected is None for p in pairs)
    if unpaired and config.method != "sft":
        raise ValueError(f"{unpaired} of {len(pairs)} examples have no rejected response (sft_examples): method "
                         f"{config.method!r} needs a pair; they train only method='sft'")
    distributed.check_divisible(batch_size=config.batch_size)
    t0 = time.time()
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)
    device = distributed.setup(resolve_device(config.device))
    policy = copy.copy(captioner)
    policy.model = copy.deepcopy(captioner.model).to(device)
    # fail on over-long responses before any training: encode every response once
    is_ed = bool(getattr(policy.model.config, "is_encoder_decoder", False))
    for side in ("chosen",) if config.method == "sft" else ("chosen", "rejected"):
        encode_responses(policy.tokenizer, [getattr(p, side) for p in pairs], [getattr(p, f"{side}_spans") for p in pairs],
                         is_encoder_decoder=is_ed, questions=[p.question for p in pairs])
    ref = reference_logprobs(policy, pairs, config) if config.method != "sft" else None
    opt = torch.optim.AdamW(policy.model.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(config.warmup_steps, 1)))
    order_rng = random.Random(config.seed)
    queue: list[int] = []
    history: list[dict[str, float]] = []
    window: list[dict[str, float]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    if select_by is not None:
        policy.model.eval()
        score = float(select_by(policy))
        history.append({"step": 0, "selected_metric": score, "pairs_seen": 0, "wall_s": round(time.time() - t0, 2)})
        best = (score, 0, copy.deepcopy(policy.model.state_dict()))
    policy.model.train(not config.disable_dropout)
    for step in tqdm(range(1, config.steps + 1), desc=config.method,
                     disable=not progress or not distributed.is_main_process()):
        while len(queue) < config.batch_size:
            epoch = list(range(len(pairs)))
            order_rng.shuffle(epoch)
            queue += epoch
        idx, queue = queue[:config.batch_size], queue[config.batch_size:]
        batch_ref = tuple(r[idx] for r in ref) if ref is not None else None
        loss, stats = preference_loss(policy.model, policy, [pairs[i] for i in idx], config, batch_ref)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        distributed.sum_gradients(policy.model.parameters())
        if config.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(policy.model.parameters(), config.max_grad_norm)
        opt.step()
        sched.step()
        if not math.isfinite(stats["loss"]):
            raise FloatingPointError(f"{config.method} loss became {stats['loss']} at step {step}; lower learning_rate")
        window.append(stats)
        if step % config.log_every == 0 or step == config.steps:
            row = {"step": step, **{k: float(np.mean([w[k] for w in window])) for k in window[0]},
                   "pairs_seen": step * config.batch_size, "wall_s": round(time.time() - t0, 2)}
            if select_by is not None:
                policy.model.eval()
                row["selected_metric"] = float(select_by(policy))
                if row["selected_metric"] < best[0]:
                    best = (row["selected_metric"], step, copy.deepcopy(policy.model.state_dict()))
                policy.model.train(not config.disable_dropout)
            history.append(row)
            window = []
            if callback is not None:  # e.g. evaluate the policy mid-training; it is put back in training mode
                policy.model.eval()
                callback(step, row, policy)
                policy.model.train(not config.disable_dropout)
    selected = None
    if best is not None:
        policy.model.load_state_dict(best[2])
        selected = best[1]
    policy.model.eval()
    return PreferenceResult(policy, history, config, round(time.time() - t0, 2), selected)
