"""The tiny OpenCLIP reward backbone: a custom open_clip config, contrastive training, retrieval tests.

Shipped in open_clip's own hub layout (``open_clip_config.json`` + ``open_clip_model.safetensors``), so
both of these load it offline::

    open_clip.add_model_config("lib/feedbacklab/models/configs/shapes-clip.json")
    model, _, preprocess = open_clip.create_model_and_transforms(
        "shapes-clip", pretrained="data/models/shapes-clip/open_clip_model.safetensors")
    # or, with no registration:
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:data/models/shapes-clip")
"""
from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from feedbacklab.models import data as wdata
from feedbacklab.models.registry import hardware, update_card
from feedbacklab.models.training import WarmupSteps

CONFIG_DIR = Path(__file__).parent / "configs"
NAME = "shapes-clip"
WEIGHTS_FILE = "open_clip_model.safetensors"
Log = Callable[[str], None]


def register_config(name: str = NAME) -> str:
    """Register ``configs/<name>.json`` with open_clip (idempotent) and return the model name."""
    import open_clip

    if name not in open_clip.list_models():
        path = CONFIG_DIR / f"{name}.json"
        if not path.is_file():
            raise ValueError(f"no open_clip config {path}; shipped configs: {sorted(p.stem for p in CONFIG_DIR.glob('*.json'))}")
        open_clip.add_model_config(path)
    return name


@dataclass
class LoadedClip:
    """An open_clip model with its tokenizer and normalisation; images are float (B, 3, H, W) in [0, 1]."""

    model: torch.nn.Module
    tokenizer: Callable
    preprocess: Callable  # open_clip's PIL transform, for real-world use
    name: str
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """Resize to the model's input size and apply its mean/std normalisation."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W) in [0, 1], got shape {tuple(images.shape)}")
        x = images.to(self.device, torch.float32)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bicubic", align_corners=False)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings (B, D)."""
        return F.normalize(self.model.encode_image(self.normalize(images)), dim=-1)

    def text_features(self, prompts: Sequence[str]) -> torch.Tensor:
        """Unit-norm text embeddings (B, D)."""
        return F.normalize(self.model.encode_text(self.tokenizer(list(prompts)).to(self.device)), dim=-1)

    @torch.no_grad()
    def similarity(self, prompts: Sequence[str], images: torch.Tensor) -> torch.Tensor:
        """Cosine similarity of each prompt with its image, (B,) — the CLIP score of Hessel et al. 2021 before ×w."""
        if len(prompts) != len(images):
            raise ValueError(f"need one prompt per image, got {len(prompts)} prompts and {len(images)} images")
        return (self.text_features(prompts) * self.image_features(images)).sum(-1)


def _loaded(model, preprocess, name: str, tokenizer) -> LoadedClip:
    cfg = model.visual.preprocess_cfg
    size = cfg["size"][0] if isinstance(cfg["size"], (tuple, list)) else cfg["size"]
    return LoadedClip(model=model.eval(), tokenizer=tokenizer, preprocess=preprocess, name=name,
                      image_size=int(size), mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))


def build_clip(name: str = NAME, seed: int = 0) -> LoadedClip:
    """An untrained model from the registered custom config ``name``."""
    import open_clip

    register_config(name)
    torch.manual_seed(seed)
    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None)
    return _loaded(model, preprocess, name, open_clip.get_tokenizer(name))


def save_clip(clip: LoadedClip, out_dir: str | Path) -> Path:
    """Write open_clip's hub layout: ``open_clip_config.json`` + ``open_clip_model.safetensors``."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_cfg = json.loads((CONFIG_DIR / f"{clip.name}.json").read_text())
    preprocess_cfg = {"mean": list(clip.mean), "std": list(clip.std), "interpolation": "bicubic",
                      "resize_mode": "shortest"}
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg},
                                                          indent=2) + "\n")
    state = {k: v.detach().contiguous().cpu() for k, v in clip.model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_FILE))
    update_card(out, name=out.name, kind="clip", open_clip_name=clip.name, config=model_cfg,
                load=f'open_clip.create_model_and_transforms("local-dir:data/models/{out.name}"), or, after '
                     f'open_clip.add_model_config(feedbacklab.models.clip.CONFIG_DIR / "{clip.name}.json"), '
                     f'open_clip.create_model_and_transforms("{clip.name}", '
                     f'pretrained="data/models/{out.name}/{WEIGHTS_FILE}")')
    return out


def load_clip_dir(path: str | Path, device: str | torch.device = "cpu") -> LoadedClip:
    """Load a directory in open_clip's hub layout with ``create_model_and_transforms("local-dir:...")``."""
    import open_clip

    path = Path(path)
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{path}", device=device)
    cfg = json.loads((path / "open_clip_config.json").read_text())["model_cfg"]
    tokenizer = open_clip.get_tokenizer(f"local-dir:{path}", context_length=cfg["text_cfg"]["context_length"])
    return _loaded(model, preprocess, path.name, tokenizer)


# ------------------------------------------------------------------------------------------ training
def corrupt_image(image: np.ndarray, scene: Any, rng: random.Random) -> np.ndarray:
    """One random ``world.corrupt`` corruption that keeps the prompt true (photometric or artifact kinds)."""
    return corrupt_image_with_kind(image, scene, rng)[0]


def corrupt_image_with_kind(image: np.ndarray, scene: Any, rng: random.Random) -> tuple[np.ndarray, str, float]:
    """:func:`corrupt_image` that also returns the corruption's kind and strength (for quality captions)."""
    from feedbacklab.world import corrupt

    kind = rng.choice(corrupt.PHOTOMETRIC + corrupt.ARTIFACT_KINDS)
    strength = rng.uniform(0.2, 1.0)
    return corrupt.apply(kind, image, scene, rng, strength=strength)[0], kind, strength


#: The word a web caption would use for each ``world.corrupt`` kind (``None``: a clean image).
QUALITY_WORDS: dict[str | None, str] = {
    None: "clean", "noise": "noisy", "blur": "blurry", "jpeg": "blocky", "color_jitter": "faded",
    "malformed": "warped", "off_palette": "stained", "fragment": "chipped", "fused": "doubled",
    "color_bleed": "smudged"}
#: Degree words by corruption strength (in U(0.2, 1)): below .45 "slightly", from .75 "very".
QUALITY_DEGREES = ((0.45, "slightly "), (0.75, ""), (float("inf"), "very "))


def quality_caption(prompt: str, kind: str | None = None, strength: float = 0.0) -> str:
    """``prompt`` as a caption that also states the image's quality: "a very blurry picture of <prompt>".

    Real CLIPs see image quality because web captions say it ("a blurry photo of ..."); the LAION aesthetic
    predictor and ImageReward's backbone rely on that. ``kind`` is a ``world.corrupt`` kind or ``None`` (clean).
    """
    if kind not in QUALITY_WORDS:
        raise ValueError(f"unknown corruption kind {kind!r}; accepted: {[k for k in QUALITY_WORDS if k]} or None")
    degree = "" if kind is None else next(d for limit, d in QUALITY_DEGREES if strength < limit)
    return f"a {degree}{QUALITY_WORDS[kind]} picture of {prompt}"


def quality_variants(kind: str | None, strength: float) -> list[tuple[str | None, float]]:
    """Every (kind, strength) whose :func:`quality_caption` differs from this one's: other kinds, other degrees."""
    strengths = (0.3, 0.6, 0.9)  # one per degree
    options = [(None, 0.0)] + [(k, s) for k in QUALITY_WORDS if k for s in strengths]
    mine = quality_caption("", kind, strength)
    return [(k, s) for k, s in options if quality_caption("", k, s) != mine]


def _soft_targets(keys: Sequence[str]) -> torch.Tensor:
    """Row-normalised equality matrix: duplicates of a prompt in a batch are all positives."""
    idx = {k: i for i, k in enumerate(dict.fromkeys(keys))}
    ids = torch.tensor([idx[k] for k in keys])
    same = (ids[:, None] == ids[None, :]).float()
    return same / same.sum(1, keepdim=True)


class HardNegatives:
    """``negatives(prompt, k, rng)``: ``k`` one-attribute edits of ``prompt`` (``world.contrastive_specs``), every edit
    of a ``focus`` attribute first (e.g. all three other counts of an attribute prompt), the rest drawn at random."""

    def __init__(self, prompts: Sequence[str], focus: Sequence[str] = ()):
        from feedbacklab import world

        self.table: dict[str, tuple[list[str], list[str]]] = {}
        for p in dict.fromkeys(prompts):
            edits = [(attr, world.prompt(v)) for attr, v in world.contrastive_specs(world.parse(p))]
            self.table[p] = ([e for a, e in edits if a in focus], [e for a, e in edits if a not in focus])

    def __call__(self, prompt: str, k: int, rng: random.Random) -> list[str]:
        first, rest = self.table[prompt]
        first = first[:k] if len(first) <= k else rng.sample(first, k)
        return first + rng.sample(rest, min(k - len(first), len(rest)))

    def texts(self) -> list[str]:
        """Every prompt and every edit, once (to tokenise them before training: the tokenizer is a tenth of a step)."""
        return list(dict.fromkeys([p for p in self.table] + [e for a, b in self.table.values() for e in a + b]))


def train_clip(clip: LoadedClip, steps: int, batch_size: int = 128, n_images: int = 20_000, lr: float = 1e-3,
               corrupt_prob: float = 0.5, hard_negatives: int = 4, focus_attributes: Sequence[str] = (),
               cosine: bool = False, quality_captions: float = 0.0, quality_negatives: int = 2, seed: int = 0,
               time_budget_s: float | None = None, log: Log = print, log_every: int = 50) -> dict[str, Any]:
    """Contrastive training (Radford et al. 2021, InfoNCE both ways) plus a hard-negative term.

    The hard-negative term is cross-entropy of the image against its true prompt and ``hard_negatives`` of
    ``world.contrastive_prompts`` (one-attribute edits); every edit of a ``focus_attributes`` attribute is among
    them (count and relation are what a CLIP learns last: retrieval .65 / .19 with random edits only).
    ``cosine`` decays the learning rate to 0 at ``steps`` after the warm-up (else it stays constant).
    Images: seen-split renders, a share ``corrupt_prob`` corrupted with ``world.corrupt`` photometric/artifact
    kinds (those that keep the prompt true).

    ``quality_captions``: the share of images whose caption also states their quality (:func:`quality_caption`:
    "a clean picture of …", "a very blurry picture of …"); their hard negatives are ``quality_negatives`` other
    quality captions of the same prompt, then attribute edits in the image's own quality caption. With 0 (the
    first shipped CLIP) every caption is the bare prompt, so the embedding learns to ignore quality: a reward or
    aesthetic head on it cannot see noise, blur or artifacts. The other captions stay bare prompts, so the
    similarity to a bare prompt (``clip-score``) stays trained to be invariant to quality.
    """
    from feedbacklab import world

    if steps < 0 or batch_size < 2:
        raise ValueError(f"need steps >= 0 and batch_size >= 2, got {steps}, {batch_size}")
    if not 0.0 <= quality_captions <= 1.0 or not 0 <= quality_negatives <= hard_negatives:
        raise ValueError(f"need quality_captions in [0, 1] and 0 <= quality_negatives <= hard_negatives "
                         f"({hard_negatives}), got {quality_captions}, {quality_negatives}")
    t0 = time.time()
    torch.manual_seed(seed)
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    specs = wdata.sample_specs(n_images, seed=seed + 2)
    images, scenes = wdata.render_specs(specs, size=clip.image_size, seed=seed + 20_000)
    prompts = [world.prompt(s) for s in specs]
    negatives = HardNegatives(prompts, focus_attributes)
    model = clip.model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    log(f"clip: {n_images} images rendered in {time.time() - t0:.1f}s")
    run = WarmupSteps(opt, lr, 100, steps, batch_size, "clip", log, log_every, time_budget_s, cosine=cosine)
    texts_all = negatives.texts()
    tokens = dict(zip(texts_all, clip.tokenizer(texts_all)))

    def token_ids(texts: list[str]) -> torch.Tensor:
        new = [t for t in dict.fromkeys(texts) if t not in tokens]
        tokens.update(zip(new, clip.tokenizer(new)) if new else ())
        return torch.stack([tokens[t] for t in texts])

    while run.running():
        idx = torch.randint(n_images, (batch_size,), generator=gen).tolist()
        batch, texts, hard = [], [], []
        for i in idx:
            image, kind, strength = images[i], None, 0.0
            if rng.random() < corrupt_prob:
                image, kind, strength = corrupt_image_with_kind(images[i], scenes[i], rng)
            batch.append(image)
            edits = negatives(prompts[i], hard_negatives, rng)
            if rng.random() < quality_captions:
                others = rng.sample(quality_variants(kind, strength), quality_negatives)
                texts.append(quality_caption(prompts[i], kind, strength))
                hard.append([quality_caption(prompts[i], k_, s_) for k_, s_ in others]
                            + [quality_caption(e, kind, strength) for e in edits[:hard_negatives - quality_negatives]])
            else:
                texts.append(prompts[i])
                hard.append(edits)
        batch = np.stack(batch)
        k = min(len(h) for h in hard)
        img = F.normalize(model.encode_image(clip.normalize(wdata.to_tensor(batch))), dim=-1)
        ids = token_ids(texts + [n for h in hard for n in h[:k]])
        txt = F.normalize(model.encode_text(ids), dim=-1)
        pos, neg = txt[:batch_size], txt[batch_size:].view(batch_size, k, -1)
        scale = model.logit_scale.exp().clamp(max=100)
        logits = scale * img @ pos.T
        target = _soft_targets(texts)
        loss = (torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
                + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean()) / 2
        if k > 0:
            hard_logits = scale * torch.cat([(img * pos).sum(-1, keepdim=True), torch.einsum("bd,bkd->bk", img, neg)], 1)
            loss = loss + F.cross_entropy(hard_logits, torch.zeros(batch_size, dtype=torch.long))
        run(loss)
    model.eval()
    from feedbacklab.world import corrupt

    return {"steps": run.step, "batch_size": batch_size, "n_images": n_images, "lr": lr, "corrupt_prob": corrupt_prob,
            "corruptions": list(corrupt.PHOTOMETRIC + corrupt.ARTIFACT_KINDS) + ["strength ~ U(0.2, 1)"],
            "hard_negatives": hard_negatives, "focus_attributes": list(focus_attributes), "cosine": cosine,
            "quality_captions": quality_captions, "quality_negatives": quality_negatives, "seed": seed, "split": "seen", "family_mix": wdata.FAMILY_MIX,
            "final_loss": round(run.loss_avg, 4), "wall_s": round(time.time() - t0, 1), "hardware": hardware()}


def pretrain_clip(out_dir: str | Path, steps: int = 3000, batch_size: int = 128, n_images: int = 20_000,
                  lr: float = 1e-3, hard_negatives: int = 4, focus_attributes: Sequence[str] = (),
                  cosine: bool = False, quality_captions: float = 0.0, quality_negatives: int = 2, seed: int = 0,
                  time_budget_s: float | None = None, eval_n: int = 500, log: Log = print) -> dict:
    """Build, train, save the tiny OpenCLIP into ``out_dir`` and record its retrieval on renders (``eval_n`` each)."""
    from feedbacklab.models.evaluate import evaluate_shipped_clip

    clip = build_clip(NAME, seed=seed)
    stats = train_clip(clip, steps=steps, batch_size=batch_size, n_images=n_images, lr=lr,
                       hard_negatives=hard_negatives, focus_attributes=focus_attributes, cosine=cosine,
                       quality_captions=quality_captions, quality_negatives=quality_negatives, seed=seed,
                       time_budget_s=time_budget_s, log=log)
    save_clip(clip, out_dir)
    update_card(out_dir, training=stats)
    return {**stats, "retrieval": evaluate_shipped_clip(out_dir, n=eval_n) if eval_n else {}}


# ----------------------------------------------------------------------------------------- retrieval
@torch.no_grad()
def retrieval_accuracy(clip: LoadedClip, prompts: Sequence[str], images: torch.Tensor,
                       batch_size: int = 128) -> dict[str, float]:
    """Share of images whose true prompt outscores all its one-attribute edits (``world.contrastive_specs``),
    overall ("all") and per changed attribute (true prompt vs the edits of that attribute)."""
    from feedbacklab import world

    hits: dict[str, list[bool]] = {}
    for i in range(0, len(prompts), batch_size):
        chunk = list(prompts[i:i + batch_size])
        img = clip.image_features(images[i:i + batch_size])
        for j, p in enumerate(chunk):
            variants = world.contrastive_specs(world.parse(p))
            negs = [world.prompt(v) for _, v in variants]
            scores = (clip.text_features([p] + negs) @ img[j]).tolist()
            by_attr: dict[str, list[float]] = {}
            for (attr, _), s in zip(variants, scores[1:]):
                by_attr.setdefault(attr, []).append(s)
            for attr, s in by_attr.items():
                hits.setdefault(attr, []).append(scores[0] > max(s))
            hits.setdefault("all", []).append(scores[0] > max(scores[1:]) if negs else True)
    return {k: float(np.mean(v)) for k, v in hits.items()} | {"n": len(prompts)}
