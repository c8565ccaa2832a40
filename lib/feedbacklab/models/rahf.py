"""RAHF, the Rich Automatic Human Feedback model (Liang et al., CVPR 2024, Sec. 4).

ViT image patch tokens and embedded prompt tokens are concatenated and encoded together by a T5 encoder
(self-attention across both). Three kinds of head read the result:

- heatmap: the image tokens as a feature map → conv → transposed convs → sigmoid, at image resolution;
- score: the feature map → conv → linear → sigmoid, one number in [0, 1];
- misaligned keywords: a T5 decoder that, teacher-forced, regenerates the prompt with a marker token
  after each misaligned word (``keyword_sequence``); ``predict_keywords`` decodes it back into labels.

Two variants (``VARIANTS``): ``multi-head`` has one head per output (two heatmaps, four scores, one
sequence) over a single encoding; ``augmented-prompt`` has one head per output *kind* and encodes the
image once per task with the task's name prepended to the prompt (e.g. "implausibility heatmap").

The vision side starts from an OpenCLIP ViT (``shapes-clip`` by default); its bottom ``freeze_fraction``
of blocks stay frozen, so training caches their outputs once per image (:meth:`RAHF.features`). The rest
(T5 encoder and decoder, built from a small ``T5Config`` over a word vocabulary) trains from scratch.
"""
from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from feedbacklab.feedback.records import SCORE_ASPECTS
from feedbacklab.feedback.rich import MAP_KINDS

VARIANTS = ("multi-head", "augmented-prompt")
TASK_SAMPLING = ("all", "one-per-kind")
HEATMAP_LOSSES = ("mse", "bce")
TASK_PROMPTS = {"implausible": "implausibility heatmap", "misaligned": "misalignment heatmap",
                "plausibility": "plausibility score", "alignment": "alignment score",
                "aesthetics": "aesthetics score", "overall": "overall score", "keywords": "misaligned keywords"}
SPECIALS = ("<pad>", "</s>", "<unk>", "<mis>")   # ids 0..3: pad (also the decoder start), end, unknown, marker
PAD, EOS, UNK, MARK = range(4)
CONFIG_FILE, WEIGHTS_FILE = "rahf_config.json", "rahf.safetensors"


class RAHFError(ValueError):
    """A RAHF configuration or input is invalid."""


def words(prompt: str) -> list[str]:
    """A prompt's tokens as RichHF-18K labels them (``datasets.richhf_tokens``), lower-cased."""
    from feedbacklab.datasets.richhf import richhf_tokens

    return [t.lower() for t in richhf_tokens(prompt)]


@dataclass
class WordVocab:
    """A word-level vocabulary: ``SPECIALS`` first, then task words and prompt words; unknown → ``<unk>``."""

    tokens: list[str]

    @classmethod
    def from_prompts(cls, prompts: Sequence[str]) -> "WordVocab":
        seen = dict.fromkeys(SPECIALS)
        for text in list(TASK_PROMPTS.values()) + list(prompts):
            seen.update(dict.fromkeys(words(text)))
        return cls(list(seen))

    def __post_init__(self):
        if tuple(self.tokens[: len(SPECIALS)]) != SPECIALS:
            raise RAHFError(f"a vocabulary starts with {SPECIALS}")
        self._index = {t: i for i, t in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, tokens: Sequence[str]) -> list[int]:
        return [self._index.get(t, UNK) for t in tokens]


def keyword_sequence(tokens: Sequence[str], labels: Sequence[int]) -> list[str]:
    """The decoder's target: the prompt's tokens with ``<mis>`` after each misaligned one (RichHF Sec. 4.1)."""
    if len(tokens) != len(labels):
        raise RAHFError(f"{len(tokens)} tokens but {len(labels)} labels")
    out = []
    for token, label in zip(tokens, labels):
        out += [token, SPECIALS[MARK]] if label else [token]
    return out


def keyword_labels(sequence: Sequence[str]) -> tuple[int, ...]:
    """Inverse of :func:`keyword_sequence`: one 0/1 per word, 1 when a ``<mis>`` follows it."""
    labels: list[int] = []
    for token in sequence:
        if token == SPECIALS[MARK]:
            if labels:
                labels[-1] = 1
        elif token not in SPECIALS:
            labels.append(0)
    return tuple(labels)


@dataclass
class RAHFConfig:
    """Architecture (saved with the model). Paper: ViT + T5 encoder; here tiny, from ``shapes-clip``."""

    variant: str = "multi-head"          # one of VARIANTS
    clip: str = "shapes-clip"            # vision side: an OpenCLIP ViT (shipped name, directory or "ARCH/TAG")
    freeze_fraction: float = 0.75        # bottom share of the ViT's blocks kept frozen (their outputs are cached)
    d_model: int = 128                   # T5 width
    num_layers: int = 2                  # T5 encoder layers (self-attention over image and prompt tokens)
    num_decoder_layers: int = 2          # keyword decoder layers
    num_heads: int = 4
    d_ff: int = 256
    dropout: float = 0.0                 # T5 dropout (early stopping regularises; dropout cost 12 % of a step)
    head_channels: tuple[int, ...] = (64, 32)  # heatmap head: channels of each 2x transposed-conv stage
    head_size: int = 32                  # the head's own output side, resized bilinearly to map_size
    score_channels: int = 32             # score head: conv channels before the linear layer
    map_size: int = 64                   # heatmap output side (the label maps' resolution)
    max_words: int = 32                  # prompt words kept (task words included)
    keyword_margin: float = 0.0          # <mis> is decoded when its logit beats the next word's by more than this
    vocab: list[str] = field(default_factory=list)  # WordVocab tokens; set from the training prompts

    def __post_init__(self):
        self.head_channels = tuple(int(c) for c in self.head_channels)
        if self.variant not in VARIANTS:
            raise RAHFError(f"unknown RAHF variant {self.variant!r}; accepted: {VARIANTS}")
        if not 0.0 <= self.freeze_fraction <= 1.0:
            raise RAHFError(f"freeze_fraction must be in [0, 1], got {self.freeze_fraction}")
        if self.d_model % self.num_heads or min(self.d_model, self.num_layers, self.num_decoder_layers, self.d_ff) < 1:
            raise RAHFError("d_model must be a positive multiple of num_heads; layers and d_ff >= 1")
        if self.map_size < 1 or not self.head_channels:
            raise RAHFError("map_size must be >= 1 and head_channels non-empty")


class HeatmapHead(nn.Module):
    """Feature map (B, C, g, g) → conv → 2x transposed convs up to ``head_size`` → resized to ``out_size`` →
    sigmoid: (B, n_maps, S, S) in [0, 1]."""

    def __init__(self, in_channels: int, channels: Sequence[int], grid: int, head_size: int, n_maps: int = 1,
                 out_size: int | None = None):
        super().__init__()
        stages = max(0, math.ceil(math.log2(max(head_size / grid, 1))))
        widths = [channels[min(i, len(channels) - 1)] for i in range(stages + 1)]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.GELU()]
        for a, b in zip(widths, widths[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, stride=2, padding=1), nn.GELU()]
        layers.append(nn.Conv2d(widths[-1], n_maps, 1))
        self.net = nn.Sequential(*layers)
        self.out_size = out_size or head_size
        nn.init.constant_(self.net[-1].bias, -3.0)   # start near the empty map (most ground truths are empty)

    def logits(self, fmap: torch.Tensor) -> torch.Tensor:
        """The maps before the sigmoid (the ``"bce"`` heatmap loss reads these: no saturated gradient)."""
        x = self.net(fmap)
        if x.shape[-1] != self.out_size:   # logits resized, so the map stays smooth
            x = F.interpolate(x, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return x

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.logits(fmap))


class ScoreHead(nn.Module):
    """Feature map (B, C, g, g) → conv → linear → sigmoid: (B, n_scores) in [0, 1]."""

    def __init__(self, in_channels: int, channels: int, grid: int, n_scores: int = 1):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.GELU())
        self.linear = nn.Linear(channels * grid * grid, n_scores)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.linear(self.conv(fmap).flatten(1)))


class RAHF(nn.Module):
    """RAHF over an OpenCLIP ViT and a small T5; ``forward`` returns heatmaps, scores and the keyword loss."""

    def __init__(self, config: RAHFConfig, clip: Any = None, device: str | torch.device = "auto"):
        from transformers import T5Config, T5ForConditionalGeneration

        from feedbacklab.models.clip_tokens import ClipTokens
        from feedbacklab.rewards.clip_backbone import ClipBackbone

        super().__init__()
        if not config.vocab:
            raise RAHFError("RAHFConfig.vocab is empty: build it with WordVocab.from_prompts(training prompts)")
        self.config = config
        self.vocab = WordVocab(list(config.vocab))
        clip = clip if clip is not None else config.clip
        # the model trains the ViT's top blocks: it owns its copy, never a backbone shared with other rewards
        self.backbone = ClipBackbone.resolve(clip if isinstance(clip, str) else copy.deepcopy(clip), device)
        self.vision = ClipTokens(self.backbone.model, config.freeze_fraction)
        self.backbone.model.transformer.requires_grad_(False)     # the text tower is unused: T5 embeds the prompt
        self.backbone.model.ln_final.requires_grad_(False)
        visual = self.backbone.model.visual
        self.grid = int(round(math.sqrt(visual.positional_embedding.shape[0] - 1)))
        d = config.d_model
        self.image_in = nn.Linear(self.vision.image_width, d)
        t5 = T5Config(vocab_size=len(self.vocab), d_model=d, d_kv=d // config.num_heads, d_ff=config.d_ff,
                      num_layers=config.num_layers, num_decoder_layers=config.num_decoder_layers,
                      num_heads=config.num_heads, dropout_rate=config.dropout, pad_token_id=PAD, eos_token_id=EOS,
                      decoder_start_token_id=PAD, tie_word_embeddings=False)
        self.t5 = T5ForConditionalGeneration(t5)
        n_maps, n_scores = (1, 1) if config.variant == "augmented-prompt" else (len(MAP_KINDS), len(SCORE_ASPECTS))
        self.heatmap_head = HeatmapHead(d, config.head_channels, self.grid, min(config.head_size, config.map_size),
                                        n_maps, config.map_size)
        self.score_head = ScoreHead(d, config.score_channels, self.grid, n_scores)
        self.to(self.backbone.mean.device)

    @property
    def device(self) -> torch.device:
        return self.backbone.mean.device

    # ------------------------------------------------------------ encoding
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] → the frozen ViT blocks' output (cacheable: it never trains)."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and images.requires_grad):
            return self.vision.image_bottom(self.backbone.preprocess(images))

    def _prompt_ids(self, prompts: Sequence[str], tasks: Sequence[str | None]) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [self.vocab.encode(((words(TASK_PROMPTS[t]) + [":"] if t else []) + words(p))[: self.config.max_words])
                for p, t in zip(prompts, tasks)]
        length = max(1, max(len(s) for s in seqs))
        ids = torch.full((len(seqs), length), PAD, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        return ids.to(self.device), (ids != PAD).long().to(self.device)

    def encode(self, features: torch.Tensor, prompts: Sequence[str], tasks: Sequence[str | None] = (None,)
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Joint encoding of each image with its prompt, once per task (the task's name prepended; None: none),
        in one T5 call: (feature maps (T·B, d, g, g), encoder states (T·B, P + L, d), attention mask), task-major."""
        image = self.image_in(self.vision.image_top(features)[:, 1:])          # patch tokens, class token dropped
        ids, mask = self._prompt_ids([p for task in tasks for p in prompts], [t for t in tasks for _ in prompts])
        image = image.repeat(len(tasks), 1, 1)
        x = torch.cat([image, self.t5.shared(ids)], dim=1)
        full_mask = torch.cat([torch.ones(image.shape[:2], dtype=torch.long, device=self.device), mask], dim=1)
        states = self.t5.encoder(inputs_embeds=x, attention_mask=full_mask).last_hidden_state
        n = image.shape[1]
        fmap = states[:, :n].transpose(1, 2).reshape(len(ids), -1, self.grid, self.grid)
        return fmap, states, full_mask

    def _keyword_targets(self, tokens: Sequence[Sequence[str]], labels: Sequence[Sequence[int]]) -> torch.Tensor:
        seqs = [self.vocab.encode(keyword_sequence(list(t), list(lab))[: 2 * self.config.max_words]) + [EOS]
                for t, lab in zip(tokens, labels)]
        out = torch.full((len(seqs), max(len(s) for s in seqs)), -100, dtype=torch.long)
        for i, s in enumerate(seqs):
            out[i, : len(s)] = torch.tensor(s)
        return out.to(self.device)

    def forward(self, features: torch.Tensor, prompts: Sequence[str],
                keyword_tokens: Sequence[Sequence[str]] | None = None,
                keyword_labels_: Sequence[Sequence[int]] | None = None,
                tasks: Sequence[str] | None = None) -> dict[str, Any]:
        """Predictions for cached ``features``: ``heatmaps`` {kind: (B, S, S)}, ``scores`` (B, n) for the aspects
        in ``score_aspects``, and with keyword targets the teacher-forced ``keyword_loss``.

        ``tasks`` (augmented-prompt only; a subset of ``TASK_PROMPTS``) encodes only those tasks, as training
        with ``RichTrainConfig.tasks_per_step`` does; None computes every output."""
        prompts = list(prompts)
        out: dict[str, Any] = {}
        if self.config.variant == "multi-head":
            fmap, states, mask = self.encode(features, prompts)
            logits = self.heatmap_head.logits(fmap)
            out["heatmap_logits"] = {k: logits[:, i] for i, k in enumerate(MAP_KINDS)}
            out["scores"], out["score_aspects"] = self.score_head(fmap), SCORE_ASPECTS
            keyword_states = (states, mask)
        else:   # every task in one encoder call, task-major: maps, then scores, then keywords
            tasks = tuple(TASK_PROMPTS) if tasks is None else tuple(tasks)
            unknown = set(tasks) - set(TASK_PROMPTS)
            if unknown:
                raise RAHFError(f"unknown RAHF tasks {sorted(unknown)}; accepted: {list(TASK_PROMPTS)}")
            kinds = [t for t in MAP_KINDS if t in tasks]
            aspects = tuple(a for a in SCORE_ASPECTS if a in tasks)
            order = (*kinds, *aspects, *(("keywords",) if "keywords" in tasks else ()))
            b = len(prompts)
            fmap, states, mask = self.encode(features, prompts, order)
            logits = self.heatmap_head.logits(fmap[: len(kinds) * b])[:, 0]
            out["heatmap_logits"] = {k: logits[i * b : (i + 1) * b] for i, k in enumerate(kinds)}
            scores = self.score_head(fmap[len(kinds) * b : (len(kinds) + len(aspects)) * b])[:, 0]
            out["scores"], out["score_aspects"] = scores.reshape(len(aspects), b).T, aspects
            keyword_states = (states[-b:], mask[-b:]) if "keywords" in tasks else None
        out["heatmaps"] = {k: torch.sigmoid(v) for k, v in out["heatmap_logits"].items()}
        if keyword_tokens is not None and keyword_states is not None:
            targets = self._keyword_targets(keyword_tokens, keyword_labels_)
            out["keyword_loss"] = self.t5(encoder_outputs=(keyword_states[0],), attention_mask=keyword_states[1],
                                          labels=targets).loss
        out["_keyword_states"] = keyword_states
        return out

    # ------------------------------------------------------------ keyword decoding
    @torch.no_grad()
    def decode_keywords(self, states: torch.Tensor, mask: torch.Tensor, prompts: Sequence[str],
                        margin: float | None = None) -> list[tuple[int, ...]]:
        """Constrained greedy decoding: after each prompt word the decoder emits ``<mis>`` when its logit beats the
        next word's by more than ``margin`` (default ``config.keyword_margin``, see :func:`calibrate_keyword_margin`)."""
        margin = self.config.keyword_margin if margin is None else float(margin)
        targets = [self.vocab.encode(words(p)) for p in prompts]
        labels = [[0] * len(t) for t in targets]
        pos = [0] * len(prompts)            # next word to emit
        marked = [False] * len(prompts)     # the last emitted token was a marker
        emitted = [[PAD] for _ in prompts]
        for _ in range(2 * max((len(t) for t in targets), default=0) + 1):
            live = [i for i, t in enumerate(targets) if pos[i] < len(t) or (pos[i] == len(t) and not marked[i] and pos[i] > 0
                                                                              and emitted[i][-1] != EOS)]
            if not live:
                break
            length = max(len(emitted[i]) for i in live)
            dec = torch.full((len(live), length), PAD, dtype=torch.long, device=self.device)
            for row, i in enumerate(live):
                dec[row, : len(emitted[i])] = torch.tensor(emitted[i])
            logits = self.t5(encoder_outputs=(states[live],), attention_mask=mask[live], decoder_input_ids=dec).logits
            for row, i in enumerate(live):
                step = logits[row, len(emitted[i]) - 1]
                nxt = targets[i][pos[i]] if pos[i] < len(targets[i]) else EOS
                if pos[i] > 0 and not marked[i] and step[MARK] - step[nxt] > margin:
                    labels[i][pos[i] - 1], marked[i] = 1, True
                    emitted[i].append(MARK)
                else:
                    emitted[i].append(nxt)
                    pos[i] += nxt != EOS
                    marked[i] = False
        return [tuple(lab) for lab in labels]

    @torch.no_grad()
    def predict(self, images: torch.Tensor, prompts: Sequence[str], batch_size: int = 64,
                keywords: bool = True) -> dict[str, Any]:
        """Heatmaps {kind: (N, S, S)}, scores (N, 4) as numpy, and per-word keyword labels, in eval mode."""
        self.eval()
        maps: dict[str, list] = {k: [] for k in MAP_KINDS}
        scores, labels = [], []
        for start in range(0, len(prompts), batch_size):
            chunk = list(prompts[start : start + batch_size])
            out = self(self.features(images[start : start + batch_size].to(self.device)), chunk)
            for k in MAP_KINDS:
                maps[k].append(out["heatmaps"][k].float().cpu().numpy())
            scores.append(out["scores"].float().cpu().numpy())
            if keywords:
                labels += self.decode_keywords(*out["_keyword_states"], chunk)
        return {"heatmaps": {k: np.concatenate(v) for k, v in maps.items()}, "scores": np.concatenate(scores),
                "keywords": labels if keywords else None}

    # ------------------------------------------------------------ save / load
    def _saved_state(self) -> dict[str, torch.Tensor]:
        """Everything but the CLIP text tower and the frozen ViT blocks (both are reloaded from ``config.clip``)."""
        frozen = {f"vision.model.{k}" for k, v in self.vision.model.named_parameters() if not v.requires_grad}
        out, seen = {}, set()
        for k, v in self.state_dict().items():
            keep = not (k.startswith("vision.model.") or k.startswith("backbone.")) or \
                (k.startswith("vision.model.visual.") and k not in frozen)
            if keep and v.data_ptr() not in seen:   # T5 ties its embeddings: one copy of each shared tensor
                out[k] = v
                seen.add(v.data_ptr())
        return out

    def save(self, path: str | Path) -> Path:
        """``rahf_config.json`` + ``rahf.safetensors``; also a ``reward_config.json`` so ``load_reward(path)`` reads it."""
        from safetensors.torch import save_file

        from feedbacklab.rewards.registry import CONFIG_FILE as REWARD_CONFIG

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self._saved_state().items()}, path / WEIGHTS_FILE)
        (path / CONFIG_FILE).write_text(json.dumps(asdict(self.config), indent=1))
        (path / REWARD_CONFIG).write_text(json.dumps({"kind": "rahf", "config": {}}))
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "auto") -> "RAHF":
        """Read a model written by :meth:`save` (the ViT named in its config is loaded, its trained blocks replaced)."""
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CONFIG_FILE).is_file() or not (path / WEIGHTS_FILE).is_file():
            raise FileNotFoundError(f"{path} is not a saved RAHF model (needs {CONFIG_FILE} and {WEIGHTS_FILE})")
        model = cls(RAHFConfig(**json.loads((path / CONFIG_FILE).read_text())), device=device)
        state = load_file(path / WEIGHTS_FILE, device=str(model.device))
        missing = set(model._saved_state()) - set(state)
        if missing:
            raise RAHFError(f"{path / WEIGHTS_FILE} lacks {sorted(missing)[:3]}: saved by another RAHF configuration?")
        model.load_state_dict(state, strict=False)
        return model.eval()


def build_rahf(variant: str, prompts: Sequence[str], clip: Any = "shapes-clip", device: str | torch.device = "auto",
               **config: Any) -> RAHF:
    """A new RAHF of ``variant`` (one of ``VARIANTS``) whose vocabulary covers ``prompts`` (the training prompts)."""
    if variant not in VARIANTS:
        raise RAHFError(f"unknown RAHF variant {variant!r}; accepted: {VARIANTS}")
    name = clip if isinstance(clip, str) else getattr(clip, "name", "custom")
    return RAHF(RAHFConfig(variant=variant, clip=name, vocab=WordVocab.from_prompts(prompts).tokens, **config),
                clip=clip, device=device)


# ---------------------------------------------------------------- training

@dataclass
class RichTrainConfig:
    """Training of a rich-feedback model: the weighted sum of a pixel loss on the heatmaps (the paper's MSE, or by
    default cross-entropy: ``heatmap_loss``), MSE on the scores and the teacher-forced cross-entropy of the keyword
    sequence (RichHF Sec. 4.2; the paper gives no weights)."""

    epochs: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3        # heads and T5 (AdamW)
    vision_lr_scale: float = 0.3       # the ViT's trainable blocks use learning_rate × this
    weight_decay: float = 1e-4
    heatmap_weight: float = 1.0        # with "mse", whose pixel values are small (most pixels are 0), use ~10
    heatmap_loss: str = "bce"          # "bce": pixel binary cross-entropy on the logits against the soft map; "mse":
                                       # the paper's pixel MSE on the sigmoid maps. Same minimiser (p = target), but
                                       # MSE's gradient vanishes once the sigmoid saturates near 0, and with sparse maps
                                       # (hundreds of items) it stayed empty in 5 of 6 runs (scripts/rahf_heatmap_diagnostics.py)
    score_weight: float = 1.0
    keyword_weight: float = 0.1
    tasks_per_step: str = "all"        # augmented-prompt: "all" 7 tasks each step, or "one-per-kind": one random heatmap,
                                       # one random score and the keywords (3 encodings instead of 7: CPU time)
    schedule: str = "constant"         # "constant" or "one-cycle"; heatmaps start to localise late (after ~10 epochs of
                                       # ~500 items) and one-cycle's decay stopped them: CC .14 constant vs ~0 one-cycle
    early_stopping: bool = False       # keep the epoch of lowest validation loss; off: the loss is dominated by
                                       # the keyword term, which overfits first, while heatmaps still improve
    seed: int = 0

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0 or self.vision_lr_scale < 0:
            raise RAHFError("epochs and batch_size must be >= 1, learning_rate > 0, vision_lr_scale >= 0")
        if min(self.heatmap_weight, self.score_weight, self.keyword_weight) < 0:
            raise RAHFError("loss weights must be >= 0")
        if self.schedule not in ("constant", "one-cycle"):
            raise RAHFError(f"schedule must be 'constant' or 'one-cycle', got {self.schedule!r}")
        if self.heatmap_loss not in HEATMAP_LOSSES:
            raise RAHFError(f"heatmap_loss must be one of {HEATMAP_LOSSES}, got {self.heatmap_loss!r}")
        if self.tasks_per_step not in TASK_SAMPLING:
            raise RAHFError(f"tasks_per_step must be one of {TASK_SAMPLING}, got {self.tasks_per_step!r}")


def rich_targets(labels: Sequence, device: torch.device | str = "cpu") -> dict[str, Any]:
    """Training targets from ``RichLabel``s: heatmaps {kind: (N, H, W)}, scores (N, 4), keyword tokens and labels."""
    from feedbacklab.feedback.rich import stack_labels

    arrays = stack_labels(labels)
    return {"heatmaps": {k: torch.from_numpy(arrays[k]).to(device) for k in MAP_KINDS},
            "scores": torch.from_numpy(arrays["scores"]).to(device),
            "tokens": [list(lab.tokens) for lab in labels], "keywords": [list(lab.keywords) for lab in labels],
            "prompts": [lab.prompt for lab in labels]}


def rich_loss(out: dict[str, Any], targets: dict[str, Any], index: torch.Tensor | slice, config: RichTrainConfig
              ) -> tuple[torch.Tensor, dict[str, float]]:
    """Weighted sum of the three losses over the outputs present in ``out``, for the rows ``index`` of ``targets``;
    also each term's value (nan for a term with no output)."""
    zero = out["scores"].new_zeros(())
    if config.heatmap_loss == "bce":
        per_map = [F.binary_cross_entropy_with_logits(x, targets["heatmaps"][k][index].to(x.dtype))
                   for k, x in out["heatmap_logits"].items()]
    else:
        per_map = [F.mse_loss(m, targets["heatmaps"][k][index]) for k, m in out["heatmaps"].items()]
    terms = {"heatmap": torch.stack(per_map).mean() if per_map else None}
    aspects = out.get("score_aspects", SCORE_ASPECTS)
    cols = [SCORE_ASPECTS.index(a) for a in aspects]
    terms["score_mse"] = F.mse_loss(out["scores"], targets["scores"][index][:, cols]) if cols else None
    terms["keyword_ce"] = out.get("keyword_loss")
    weights = {"heatmap": config.heatmap_weight, "score_mse": config.score_weight, "keyword_ce": config.keyword_weight}
    loss = sum((weights[k] * v for k, v in terms.items() if v is not None), zero)
    return loss, {k: float(v.detach()) if v is not None else float("nan") for k, v in terms.items()}


def _check_training_inputs(images: torch.Tensor, labels: Sequence, map_size: int) -> None:
    if images.ndim != 4 or images.shape[1] != 3 or len(images) != len(labels):
        raise RAHFError(f"need images (N, 3, H, W) and one RichLabel each; got {tuple(images.shape)} and {len(labels)}")
    if not labels:
        raise RAHFError("no training labels")
    sizes = {lab.heatmaps[MAP_KINDS[0]].shape for lab in labels}
    if sizes != {(map_size, map_size)}:
        raise RAHFError(f"the label heatmaps are {sorted(sizes)} but the model predicts {map_size}x{map_size}: "
                        "set map_size to the labels' resolution")


def fit_rich_model(model: nn.Module, images: torch.Tensor, labels: Sequence, config: RichTrainConfig | None = None,
                   val_images: torch.Tensor | None = None, val_labels: Sequence | None = None,
                   progress: bool = True) -> list[dict[str, float]]:
    """Train RAHF (or any model with the same ``features`` / ``forward`` interface, e.g. ``RichCNN``) on
    images (N, 3, H, W) in [0, 1] and their ``RichLabel``s. The frozen layers' features are computed once.
    With validation data each epoch's validation loss is recorded (and, with ``config.early_stopping``, the
    best epoch kept). Returns the history."""
    from tqdm.auto import trange

    config = config or RichTrainConfig()
    map_size = model.config.map_size
    _check_training_inputs(images, labels, map_size)
    if val_images is not None:
        _check_training_inputs(val_images, val_labels, map_size)
    device = model.device
    torch.manual_seed(config.seed)
    gen = torch.Generator().manual_seed(config.seed)

    def cached(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([model.features(x[i : i + 128].to(device)) for i in range(0, len(x), 128)])

    feats, targets = cached(images), rich_targets(labels, device)
    val = (cached(val_images), rich_targets(val_labels, device)) if val_images is not None else None
    vision = {id(p) for p in getattr(model, "vision", nn.Module()).parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in trainable if id(p) not in vision], "lr": config.learning_rate}]
    if config.vision_lr_scale > 0 and any(id(p) in vision for p in trainable):
        groups.append({"params": [p for p in trainable if id(p) in vision], "lr": config.learning_rate * config.vision_lr_scale})
    opt = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    if config.schedule == "one-cycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in groups], pct_start=0.1,
                                                    total_steps=config.epochs * math.ceil(len(labels) / config.batch_size))
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    history, best = [], (float("inf"), -1, None)
    for epoch in trange(config.epochs, desc=f"training {type(model).__name__}", disable=not progress):
        model.train()
        order = torch.randperm(len(labels), generator=gen)
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for start in range(0, len(order), config.batch_size):
            idx = order[start : start + config.batch_size]
            rows = idx.tolist()
            tasks = None
            if config.tasks_per_step == "one-per-kind" and getattr(model.config, "variant", None) == "augmented-prompt":
                pick = torch.randint(0, 4, (2,), generator=gen).tolist()
                tasks = [MAP_KINDS[pick[0] % len(MAP_KINDS)], SCORE_ASPECTS[pick[1]], "keywords"]
            out = model(feats[idx.to(device)], [targets["prompts"][i] for i in rows],
                        [targets["tokens"][i] for i in rows], [targets["keywords"][i] for i in rows], tasks=tasks)
            loss, terms = rich_loss(out, targets, idx.to(device), config)
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            opt.step()
            sched.step()
            for k, v in {"loss": float(loss.detach()), **terms}.items():
                if not math.isnan(v):
                    sums[k], counts[k] = sums.get(k, 0.0) + v * len(rows), counts.get(k, 0) + len(rows)
        history.append({"epoch": epoch, **{k: v / counts[k] for k, v in sums.items()}})
        if val is not None:
            v = evaluate_loss(model, *val, config)
            history[-1].update({f"val_{k}": x for k, x in v.items()})
            if config.early_stopping and v["loss"] < best[0]:
                best = (v["loss"], epoch, copy.deepcopy(model.state_dict()))
    if best[2] is not None:
        model.load_state_dict(best[2])
        history.append({"epoch": best[1], "kept": 1.0})
    return history


def train_rahf(variant: str, images: torch.Tensor, labels: Sequence, config: RichTrainConfig,
               val_images: torch.Tensor, val_labels: Sequence, clip: Any = "shapes-clip",
               device: str | torch.device = "auto", **arch: Any) -> tuple[RAHF, list[dict[str, float]]]:
    """RAHF's whole recipe on one rich-feedback set: a model of ``variant`` over the training prompts' vocabulary
    with heatmaps at the labels' resolution, trained (``fit_rich_model``, validation loss per epoch), then its
    keyword margin chosen on the validation items (``calibrate_keyword_margin``). Seeded by ``config.seed``.
    The encoder keeps every word of the longest training prompt (real prompts run past the default 32).
    Returns the model and its history. ``arch``: further ``RAHFConfig`` fields."""
    if not labels or not val_labels:
        raise RAHFError(f"train_rahf needs training and validation labels, got {len(labels)} and {len(val_labels)}")
    side = {lab.heatmaps[MAP_KINDS[0]].shape for lab in labels}
    if len(side) != 1 or len(next(iter(side))) != 2 or len(set(next(iter(side)))) != 1:
        raise RAHFError(f"the label heatmaps must share one square size, got {sorted(side)[:4]}")
    arch.setdefault("map_size", next(iter(side))[0])
    task_words = max(len(words(t)) for t in TASK_PROMPTS.values()) + 1  # the augmented prompt's "<task> :" prefix
    arch.setdefault("max_words", max(RAHFConfig.max_words, task_words + max(len(words(lab.prompt)) for lab in labels)))
    torch.manual_seed(config.seed)
    model = build_rahf(variant, [lab.prompt for lab in labels], clip=clip, device=device, **arch)
    history = fit_rich_model(model, images, labels, config, val_images=val_images, val_labels=val_labels)
    calibrate_keyword_margin(model, val_images, val_labels)
    return model, history


@torch.no_grad()
def evaluate_loss(model: nn.Module, feats: torch.Tensor, targets: dict[str, Any], config: RichTrainConfig,
                  batch_size: int = 128) -> dict[str, float]:
    """The training loss and its terms on cached features, in eval mode (mean over items)."""
    model.eval()
    sums: dict[str, float] = {}
    n = len(targets["prompts"])
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(n, start + batch_size), device=feats.device)
        rows = idx.tolist()
        out = model(feats[idx], [targets["prompts"][i] for i in rows], [targets["tokens"][i] for i in rows],
                    [targets["keywords"][i] for i in rows])
        loss, terms = rich_loss(out, targets, idx, config)
        for k, v in {"loss": float(loss), **terms}.items():
            sums[k] = sums.get(k, 0.0) + v * len(rows)
    return {k: v / n for k, v in sums.items()}


@torch.no_grad()
def calibrate_keyword_margin(model: RAHF, images: torch.Tensor, labels: Sequence, margins: Sequence[float] | None = None,
                             batch_size: int = 64) -> dict[float, float]:
    """Choose the keyword decoder's marker margin on held-out items (e.g. the dev split): decode at each margin, keep
    the one with the best token-level F1 of the misaligned class in ``model.config.keyword_margin``; returns F1 per
    margin. Teacher-forced training leaves the marker's logit uncalibrated, which over-marks at margin 0."""
    from feedbacklab.metrics import keyword_prf

    margins = list(np.linspace(-4.0, 8.0, 25)) if margins is None else [float(m) for m in margins]
    if not margins:
        raise RAHFError("calibrate_keyword_margin needs at least one margin")
    model.eval()
    prompts = [lab.prompt for lab in labels]
    states = []
    for start in range(0, len(prompts), batch_size):
        out = model(model.features(images[start : start + batch_size].to(model.device)), prompts[start : start + batch_size],
                    tasks=["keywords"])
        states.append((out["_keyword_states"], prompts[start : start + batch_size]))
    truth = [list(lab.keywords) for lab in labels]
    f1 = {}
    for m in margins:
        pred = [k for (st, ps) in states for k in model.decode_keywords(*st, ps, margin=m)]
        f1[m] = keyword_prf([list(k) for k in pred], truth)[2]
    best = max(f1, key=lambda m: -1.0 if math.isnan(f1[m]) else f1[m])
    model.config.keyword_margin = float(best)
    return f1
