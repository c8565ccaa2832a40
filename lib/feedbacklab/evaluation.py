"""Oracle-based evaluation of generators: what Lee et al. (2023) measured with human raters, measured exactly.

- alignment: share of images whose every prompt attribute the oracle reads right, overall and per attribute;
- fidelity: the oracle's artifact rate and mean plausibility;
- diversity: mean pairwise cosine distance of CLIP image embeddings among images of one prompt;
- a simulated side-by-side human evaluation (the paper's Fig. 4): raters compare base vs fine-tuned
  images of the same prompt and seed for alignment and for fidelity.
"""
from __future__ import annotations

import random
from typing import Any, Sequence

import numpy as np
import torch

ATTRIBUTES = ("count", "color", "shape", "background")
CRITERIA = {"alignment": "alignment", "fidelity": "plausibility"}  # criterion → latent quality it compares


def eval_prompts(n_prompts: int, split: str = "seen", seed: int = 0, family: str = "attribute",
                 shape: str | None = None) -> list[str]:
    """``n_prompts`` distinct world prompts of ``family`` from ``split`` ("seen"/"unseen"), in sampling order;
    with ``shape`` only prompts whose objects are all that shape (Lee et al. fix the object, e.g. "dog")."""
    from feedbacklab import world

    if n_prompts < 1:
        raise ValueError(f"n_prompts must be >= 1, got {n_prompts}")
    if shape is not None and shape not in world.SHAPES:
        raise ValueError(f"unknown shape {shape!r}; accepted: {world.SHAPES} or None")
    rng, out = random.Random(seed), {}
    for _ in range(500 * n_prompts):
        spec = world.sample_spec(rng, family, split=split)
        if shape is None or all(s == shape for _, s in spec.objects):
            out.setdefault(world.prompt(spec), None)
        if len(out) == n_prompts:
            return list(out)
    raise ValueError(f"only {len(out)} distinct {family} prompts found in split {split!r} (shape {shape}); "
                     f"asked for {n_prompts}")


def alignment_summary(records: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Aligned rate, per-attribute accuracy, artifact rate and mean plausibility of judged records."""
    if not records:
        raise ValueError("alignment_summary needs at least one record")
    out = {"n": float(len(records)),
           "aligned_rate": float(np.mean([r["aligned"] for r in records])),
           "artifact_rate": float(np.mean([r["n_artifacts"] > 0 for r in records])),
           "plausibility": float(np.mean([r["plausibility"] for r in records]))}
    for attr in ATTRIBUTES:
        values = [r["attributes"][attr] for r in records if attr in r["attributes"]]
        if values:
            out[f"{attr}_rate"] = float(np.mean(values))
    return out


def count_confusion(records: Sequence[dict[str, Any]]) -> "pd.DataFrame":
    """Asked count (rows) × count the oracle sees (columns) → share of each row, for single-group attribute
    prompts: shows *how* a generator miscounts (Lee et al.'s count errors; here mostly one object too many)."""
    import pandas as pd
    from feedbacklab import world

    pairs = []
    for r in records:
        if "n_objects" not in r:
            raise ValueError("records need 'n_objects' (judge_record writes it; regenerate sets cached by older versions)")
        spec = world.parse(r["prompt"])
        if spec.family != "attribute":
            raise ValueError(f"count_confusion needs attribute prompts, got {r['prompt']!r}")
        pairs.append((spec.count, r["n_objects"]))
    if not pairs:
        raise ValueError("count_confusion needs at least one record")
    asked, seen = zip(*pairs)
    return pd.crosstab(pd.Series(asked, name="asked"), pd.Series(seen, name="seen"), normalize="index")


def diversity(embeddings: torch.Tensor, groups: Sequence[Any]) -> float:
    """Mean over groups (prompts) of the mean pairwise cosine distance ``1 − cos`` of (N, D) embeddings."""
    if len(groups) != embeddings.shape[0]:
        raise ValueError(f"{len(groups)} group labels for {embeddings.shape[0]} embeddings")
    emb = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    keys = np.array([str(g) for g in groups])
    values = []
    for key in dict.fromkeys(keys):
        e = emb[torch.as_tensor(np.flatnonzero(keys == key))]
        if len(e) >= 2:
            sim = e @ e.T
            values.append(float((1 - sim)[~torch.eye(len(e), dtype=torch.bool)].mean()))
    if not values:
        raise ValueError("diversity needs at least one group with two or more images")
    return float(np.mean(values))


def reward_metrics(scores: Any, labels: Any = None, truth: Any = None,
                   threshold: float | None = 0.5) -> dict[str, float]:
    """Accuracy (score > ``threshold``; skipped when None) and AUROC of reward scores against annotator labels
    and/or oracle truth."""
    from feedbacklab.metrics import auroc

    scores = np.asarray(scores.detach().cpu() if isinstance(scores, torch.Tensor) else scores, dtype=float)
    out: dict[str, float] = {}
    for name, target in (("label", labels), ("oracle", truth)):
        if target is not None:
            target = np.asarray(target, dtype=int)
            if target.shape != scores.shape:
                raise ValueError(f"{name}s have shape {target.shape}, scores {scores.shape}")
            if threshold is not None:
                out[f"acc_{name}"] = float(np.mean((scores > threshold) == target))
            out[f"auroc_{name}"] = auroc(scores, target)
    if not out:
        raise ValueError("pass labels, truth or both")
    return out


def reward_report(rewards: dict[str, Any], sets: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (reward, judged set): :func:`reward_metrics` of ``reward.score`` against the set's annotator
    labels (when it has them) and the oracle's truth; accuracy at ``reward.threshold`` when it has one."""
    rows = []
    for set_name, judged in sets.items():
        labelled = all(r.get("label") is not None for r in judged.records)
        images = judged.tensors()
        for name, reward in rewards.items():
            scores = reward.score(judged.prompts, images)
            rows.append({"reward": name, "set": set_name, "n": len(judged), **reward_metrics(
                scores, judged.labels if labelled else None, judged.truth, threshold=reward.threshold)})
    return rows


def pairwise_human_eval(records_a: Sequence[dict[str, Any]], records_b: Sequence[dict[str, Any]],
                        criterion: str = "alignment", n_raters: int = 9, noise_sd: float = 0.1,
                        tie_margin: float = 0.05, seed: int = 0) -> dict[str, float]:
    """Simulated raters compare image a vs b of each (prompt, seed) pair; shares of votes and of pair majorities.

    Each rater sees the oracle's latent quality of each image (alignment, or plausibility for "fidelity")
    plus N(0, noise_sd) noise, says "tie" when the two differ by less than ``tie_margin``, else picks one."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {criterion!r}")
    if len(records_a) != len(records_b) or not records_a:
        raise ValueError(f"need the same non-zero number of records on both sides, got {len(records_a)} and {len(records_b)}")
    for ra, rb in zip(records_a, records_b):
        if ra["prompt"] != rb["prompt"] or ra.get("seed") != rb.get("seed"):
            raise ValueError("records must be paired: the same prompt and seed at each position")
    if n_raters < 1 or noise_sd < 0 or tie_margin < 0:
        raise ValueError("n_raters must be >= 1; noise_sd and tie_margin >= 0")
    key = CRITERIA[criterion]
    qa = np.array([r["latent"][key] for r in records_a])
    qb = np.array([r["latent"][key] for r in records_b])
    rng = np.random.default_rng([seed, len(qa), n_raters])
    seen_a = qa[:, None] + rng.normal(0, noise_sd, (len(qa), n_raters))
    seen_b = qb[:, None] + rng.normal(0, noise_sd, (len(qb), n_raters))
    diff = seen_b - seen_a
    votes = np.where(np.abs(diff) < tie_margin, 0, np.sign(diff))      # +1: b preferred, −1: a, 0: tie
    b_votes, a_votes = (votes > 0).sum(1), (votes < 0).sum(1)
    return {"b_win": float((votes > 0).mean()), "a_win": float((votes < 0).mean()), "tie": float((votes == 0).mean()),
            "b_majority": float((b_votes > n_raters / 2).mean()), "a_majority": float((a_votes > n_raters / 2).mean())}


def set_human_eval(records_a: Sequence[dict[str, Any]], records_b: Sequence[dict[str, Any]], set_size: int = 4,
                   criterion: str = "alignment", n_raters: int = 3, noise_sd: float = 0.1, seed: int = 0
                   ) -> dict[str, float]:
    """TextNorm's human evaluation (Kim et al. §5): per prompt, 2·``set_size`` images of each model split into
    two sets of ``set_size``; each of ``n_raters`` simulated raters compares a set of model a with one of
    model b and picks the set whose mean latent quality (plus N(0, noise_sd) per image) is higher.

    Returns the shares of rater votes and of majority wins for each model (paper: 8 images per prompt, sets of
    4, three raters; TextNorm about twice as many alignment wins)."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {sorted(CRITERIA)}, got {criterion!r}")
    if set_size < 1 or n_raters < 1 or noise_sd < 0:
        raise ValueError("set_size and n_raters must be >= 1, noise_sd >= 0")
    key = CRITERIA[criterion]
    by_prompt: dict[str, list[list[float]]] = {}
    for side, records in enumerate((records_a, records_b)):
        for r in records:
            by_prompt.setdefault(r["prompt"], [[], []])[side].append(float(r["latent"][key]))
    usable = {p: v for p, v in by_prompt.items() if min(len(v[0]), len(v[1])) >= 2 * set_size}
    if not usable:
        raise ValueError(f"no prompt has 2 x set_size = {2 * set_size} images from both models")
    rng = np.random.default_rng([seed, len(usable), n_raters, set_size])
    votes = []
    for qa, qb in usable.values():
        for s in range(2):  # the two set pairs of the prompt: images [0:k] and [k:2k] of each model
            a = np.array(qa[s * set_size:(s + 1) * set_size])
            b = np.array(qb[s * set_size:(s + 1) * set_size])
            seen_a = a[None] + rng.normal(0, noise_sd, (n_raters, set_size))
            seen_b = b[None] + rng.normal(0, noise_sd, (n_raters, set_size))
            votes.append(np.sign(seen_b.mean(1) - seen_a.mean(1)))            # +1: b's set preferred
    votes = np.array(votes)                                                    # (comparisons, raters)
    b_votes, a_votes = (votes > 0).sum(1), (votes < 0).sum(1)
    return {"b_win": float((votes > 0).mean()), "a_win": float((votes < 0).mean()),
            "b_majority": float((b_votes > n_raters / 2).mean()), "a_majority": float((a_votes > n_raters / 2).mean()),
            "n_comparisons": int(len(votes))}


def paired_gain(a: Sequence[float], b: Sequence[float], confidence: float = 0.95, seed: int = 0) -> dict[str, float]:
    """Mean of ``b − a`` over paired samples with a bootstrap confidence interval (scipy.stats.bootstrap)."""
    from scipy.stats import bootstrap

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or len(a) < 2:
        raise ValueError("a and b must be 1-D, of equal length >= 2 (paired samples)")
    diff = b - a
    if np.all(diff == diff[0]):
        return {"gain": float(diff[0]), "low": float(diff[0]), "high": float(diff[0])}
    ci = bootstrap((diff,), np.mean, confidence_level=confidence, n_resamples=2000, rng=np.random.default_rng(seed),
                   method="percentile").confidence_interval
    return {"gain": float(diff.mean()), "low": float(ci.low), "high": float(ci.high)}


def compare(records_base: Sequence[dict[str, Any]], records_ft: Sequence[dict[str, Any]], n_raters: int = 9,
            seed: int = 0) -> dict[str, float]:
    """Flat comparison of two paired judged sets: summaries of both, the aligned gain with its CI, human-eval wins."""
    out: dict[str, float] = {}
    for name, recs in (("base", records_base), ("ft", records_ft)):
        out.update({f"{k}_{name}": v for k, v in alignment_summary(recs).items()})
    gain = paired_gain([r["aligned"] for r in records_base], [r["aligned"] for r in records_ft], seed=seed)
    out.update(aligned_gain=gain["gain"], aligned_gain_low=gain["low"], aligned_gain_high=gain["high"])
    for criterion in CRITERIA:
        res = pairwise_human_eval(records_base, records_ft, criterion, n_raters=n_raters, seed=seed)
        out.update({f"human_{criterion}_ft_win": res["b_win"], f"human_{criterion}_base_win": res["a_win"],
                    f"human_{criterion}_tie": res["tie"]})
    return out


def evaluate_generator(pipe: Any, prompts: Sequence[str], n_per_prompt: int, seed: int = 0, sampler: Any = None,
                       batch_size: int = 32, cache_dir: Any = None, clip: Any = None,
                       progress: bool = True) -> tuple[Any, dict[str, float]]:
    """Sample ``n_per_prompt`` images per prompt (seeds from ``seed``: equal for any generator), judge them all;
    return the judged set and its :func:`alignment_summary`, plus ``diversity`` when a ``ClipBackbone`` is given."""
    from feedbacklab.feedback_sets import generate_feedback_set

    judged = generate_feedback_set(pipe, prompts, n_per_prompt, None, seed=seed, sampler=sampler,
                                   batch_size=batch_size, cache_dir=cache_dir, progress=progress)
    summary = alignment_summary(judged.records)
    if clip is not None and n_per_prompt >= 2:
        summary["diversity"] = diversity(clip.embed_images(judged.tensors()), judged.prompts)
    return judged, summary


def comparison_grid(rows: dict[str, np.ndarray], titles: Sequence[str], marks: dict[str, Sequence[bool]] | None = None,
                    title: str | None = None):
    """A matplotlib figure: one row per generator (uint8 (N, H, W, 3) images, same prompts and seeds per column),
    column titles, and a green/red frame per image from ``marks[row]`` (e.g. the oracle's aligned verdict)."""
    import textwrap

    import matplotlib.pyplot as plt

    n = len(titles)
    if any(len(images) != n for images in rows.values()):
        raise ValueError(f"every row needs {n} images (one per title)")
    fig, axes = plt.subplots(len(rows), n, figsize=(1.5 * n, 1.7 * len(rows) + 0.6), squeeze=False)
    for r, (name, images) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r, c]
            ax.imshow(images[c])
            ax.set_xticks([]), ax.set_yticks([])
            if marks is not None and name in marks:
                for spine in ax.spines.values():
                    spine.set(color="tab:green" if marks[name][c] else "tab:red", linewidth=3)
            if r == 0:
                ax.set_title(textwrap.fill(titles[c], 16), fontsize=6)
        axes[r, 0].set_ylabel(name, fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def consolidated_preference(rankings: Sequence[Any]) -> dict[str, float]:
    """Item id → minus its mean rank over the annotators who ranked it (higher = preferred; the paper's human order)."""
    ranks: dict[str, list[int]] = {}
    for ranking in rankings:
        for item, rank in zip(ranking.item_ids, ranking.ranks):
            ranks.setdefault(item, []).append(rank)
    if not ranks:
        raise ValueError("consolidated_preference needs at least one ranking")
    return {item: -float(np.mean(r)) for item, r in ranks.items()}


def score_images(reward: Any, prompts: Sequence[str], images: Sequence[np.ndarray], batch_size: int = 16) -> np.ndarray:
    """``reward.score`` of uint8 (H, W, 3) images of any sizes (real datasets mix them): batched by size, no grad."""
    from feedbacklab.models.data import to_tensor

    if len(prompts) != len(images):
        raise ValueError(f"need one prompt per image, got {len(prompts)} prompts and {len(images)} images")
    out = np.full(len(images), np.nan)
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        by_shape.setdefault(tuple(np.shape(img)), []).append(i)
    with torch.no_grad():
        for idx in by_shape.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start:start + batch_size]
                x = to_tensor(np.stack([np.asarray(images[i]) for i in chunk])).to(reward.device)
                out[chunk] = reward.score([prompts[i] for i in chunk], x).float().cpu().numpy()
    return out


def ranking_accuracy(rewards: dict[str, Any], rankings: Sequence[Any], images: dict[str, np.ndarray],
                     batch_size: int = 16) -> dict[str, float]:
    """Each reward's preference accuracy on people's rankings (ImageReward's Table 2 metric on a real test set):
    the share of the rankings' ordered pairs that its scores order the same way, within each ranking (ties of
    the people skipped, the reward's count 1/2). ``images`` holds every ranked image id (uint8 (H, W, 3))."""
    from feedbacklab import metrics as M

    ids, prompts, human, groups = [], [], [], []
    for g, r in enumerate(rankings):
        missing = [i for i in r.item_ids if i not in images]
        if missing:
            raise ValueError(f"ranking {g} ({r.prompt!r}) names images without pixels: {missing[:3]}")
        for item, rank in zip(r.item_ids, r.ranks):
            ids.append(item)
            prompts.append(r.prompt)
            human.append(-rank)
            groups.append(g)
    if not ids:
        raise ValueError("ranking_accuracy needs at least one ranking")
    return {name: M.pairwise_accuracy(score_images(reward, prompts, [images[i] for i in ids], batch_size), human, groups)
            for name, reward in rewards.items()}


def aspect_accuracy(scores: dict[str, Any], records: Sequence[dict[str, Any]], groups: Sequence[Any]) -> "pd.DataFrame":
    """Which part of the oracle's overall quality each reward sees: per reward (row), the within-group pair accuracy
    of its ``scores`` against each latent aspect of the images' ``records`` (column; pairs the aspect ties skipped,
    the reward's ties count 1/2). Overall = 0.5 alignment + 0.3 plausibility + 0.2 aesthetics; a reward that
    orders alignment well and aesthetics at chance (0.5) can only reach so far on the overall preference."""
    import pandas as pd

    from feedbacklab import metrics as M
    from feedbacklab.feedback.records import SCORE_ASPECTS  # the latent qualities of feedback.latent_scores

    latent = {a: np.array([r["latent"][a] for r in records], dtype=float) for a in SCORE_ASPECTS}
    for name, s in scores.items():
        if len(s) != len(records):
            raise ValueError(f"{name!r} has {len(s)} scores for {len(records)} records")
    return pd.DataFrame({name: {a: M.pairwise_accuracy(np.asarray(s, dtype=float), latent[a], groups) for a in SCORE_ASPECTS}
                         for name, s in scores.items()}).T


class RoundJudge:
    """A fine-tuning callback ``(round, row, trajectories)`` (``ddpo_finetune``'s) that judges the policy after each
    round on fixed prompts and seeds: the proxy reward's mean and the oracle's aligned rate, against reward
    queries. Call it once with ``(-1, None, None)`` before training for the starting point; ``frame()`` is the curve."""

    def __init__(self, pipe: Any, prompts: Sequence[str], n_per_prompt: int, proxy: Any, seed: int = 0,
                 sampler: Any = None, batch_size: int = 32):
        self.pipe, self.prompts, self.n, self.proxy = pipe, list(prompts), n_per_prompt, proxy
        self.seed, self.sampler, self.batch_size = seed, sampler, batch_size
        self.rows: list[dict[str, float]] = []

    def __call__(self, rnd: int, row: dict[str, float] | None, trajectories: Any = None) -> None:
        training = self.pipe.unet.training
        self.pipe.unet.eval()
        judged, summary = evaluate_generator(self.pipe, self.prompts, self.n, self.seed, self.sampler, self.batch_size,
                                             None, progress=False)
        self.pipe.unet.train(training)
        with torch.no_grad():
            proxy = float(self.proxy.score(judged.prompts, judged.tensors()).mean())
        row = row or {}
        self.rows.append({"reward_queries": row.get("reward_queries", 0), "proxy": proxy, "aligned": summary["aligned_rate"],
                          "kl": row.get("kl", 0.0), "train_reward": row.get("reward_mean", float("nan"))})

    def frame(self) -> "pd.DataFrame":
        import pandas as pd

        return pd.DataFrame(self.rows).set_index("reward_queries")


def best_of_n(scores: Any, records: Sequence[dict[str, Any]], ns: Sequence[int], groups: Sequence[Any] | None = None
              ) -> "pd.DataFrame":
    """True quality of the image a reward selects among the first n images of each prompt, for each n.

    One row per n: ``aligned`` and ``artifact`` rates of the top-scored image, averaged over prompts (ties:
    the first), and its ``score`` (the proxy the selection maximises: TextNorm's over-optimization picture).
    ``scores=None`` gives random choice in expectation (the mean over the n images)."""
    import pandas as pd

    groups = [r["prompt"] for r in records] if groups is None else list(groups)
    if len(groups) != len(records):
        raise ValueError(f"{len(groups)} groups for {len(records)} records")
    s = None if scores is None else np.asarray(torch.as_tensor(scores).detach().cpu(), dtype=float)
    if s is not None and s.shape != (len(records),):
        raise ValueError(f"scores have shape {s.shape}; need one per record ({len(records)})")
    members: dict[Any, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(g, []).append(i)
    aligned = np.array([float(r["aligned"]) for r in records])
    artifact = np.array([float(r["n_artifacts"] > 0) for r in records])
    rows = []
    for n in ns:
        if n < 1 or any(len(m) < n for m in members.values()):
            raise ValueError(f"n = {n}: every prompt needs at least n >= 1 images (fewest: {min(map(len, members.values()))})")
        picks = [np.asarray(m[:n]) for m in members.values()]
        if s is None:
            rows.append({"n": n, "aligned": np.mean([aligned[p].mean() for p in picks]),
                         "artifact": np.mean([artifact[p].mean() for p in picks])})
        else:
            best = [p[int(np.argmax(s[p]))] for p in picks]
            rows.append({"n": n, "aligned": aligned[best].mean(), "artifact": artifact[best].mean(), "score": s[best].mean()})
    return pd.DataFrame(rows).set_index("n")


def rich_feedback_metrics(pred: dict[str, Any], labels: Sequence[Any], maps: Sequence[str] | None = None
                          ) -> dict[str, float]:
    """RichHF Tables 1-3 for one model's predictions (``RAHF.predict`` / ``RichCNN.predict`` output, or any
    dict with ``scores`` (N, 4) and/or ``heatmaps`` {kind: (N, H, W)} and/or ``keywords``) against ``RichLabel``s.

    Scores: PLCC and SRCC per aspect. Heatmaps: MSE on all items and on items with an empty ground truth;
    NSS, KLD, AUC-Judd, SIM and CC averaged over items with a non-empty one. Keywords: pooled token-level
    precision, recall and F1 of the misaligned class. Keys are ``<aspect>_plcc``, ``<kind>_cc``, ``keyword_f1``…"""
    from feedbacklab import metrics as M
    from feedbacklab.feedback.records import SCORE_ASPECTS
    from feedbacklab.feedback.rich import MAP_KINDS

    out: dict[str, float] = {}
    if pred.get("scores") is not None:
        scores = np.asarray(pred["scores"], dtype=float)
        if scores.shape != (len(labels), len(SCORE_ASPECTS)):
            raise ValueError(f"scores have shape {scores.shape}; need ({len(labels)}, {len(SCORE_ASPECTS)})")
        for i, a in enumerate(SCORE_ASPECTS):
            truth = [lab.scores[a] for lab in labels]
            out[f"{a}_plcc"], out[f"{a}_srcc"] = M.plcc(scores[:, i], truth), M.srcc(scores[:, i], truth)
    for kind in (maps if maps is not None else MAP_KINDS):
        if pred.get("heatmaps") is None or kind not in pred["heatmaps"]:
            continue
        p = np.asarray(pred["heatmaps"][kind], dtype=float)
        g = [lab.heatmaps[kind] for lab in labels]
        if len(p) != len(g):
            raise ValueError(f"{len(p)} predicted {kind} maps for {len(g)} labels")
        mse = np.array([M.heatmap_mse(a, b) for a, b in zip(p, g)], dtype=float)
        empty = np.array([b.max() <= 0 for b in g], dtype=bool)
        out[f"{kind}_mse"] = float(mse.mean()) if len(mse) else float("nan")
        out[f"{kind}_mse_empty"] = float(mse[empty].mean()) if empty.any() else float("nan")
        for name, fn in (("nss", M.nss), ("kld", M.kld), ("auc_judd", M.auc_judd), ("sim", M.sim), ("cc", M.cc)):
            values = [fn(a, b) for a, b, e in zip(p, g, empty) if not e]
            out[f"{kind}_{name}"] = float(np.nanmean(values)) if values else float("nan")
        out[f"{kind}_n_nonempty"] = float((~empty).sum())
    if pred.get("keywords") is not None:
        out["keyword_precision"], out["keyword_recall"], out["keyword_f1"] = M.keyword_prf(
            [list(k) for k in pred["keywords"]], [list(lab.keywords) for lab in labels])
    return out


# ------------------------------------------------------------------ captioners (RLHF-V)

def caption_checks(captions: Sequence[str], scenes: Sequence[Any]) -> "pd.DataFrame":
    """One row per caption: the oracle's ``world.check_caption`` fields plus ``hallucinated`` (any false claim)."""
    import dataclasses

    import pandas as pd

    from feedbacklab import world

    if len(captions) != len(scenes) or not len(captions):
        raise ValueError(f"need equally many (>0) captions and scenes, got {len(captions)} and {len(scenes)}")
    rows = []
    for caption, scene in zip(captions, scenes):
        check = world.check_caption(caption, scene)
        rows.append({"caption": caption, **dataclasses.asdict(check), "hallucinated": check.hallucinated,
                     "object_hallucinated": check.object_hallucinated})
    return pd.DataFrame(rows)


def caption_quality(captions: Sequence[str], scenes: Sequence[Any]) -> dict[str, float]:
    """Hallucination as Object HalBench reports it, and what the captions still say, judged against the true scenes.

    ``response_level``: captions with any false claim (object, count, relation, background, or not world text);
    ``object_response_level``: captions mentioning an object not in the scene; ``mention_level``: hallucinated
    object mentions / all mentions (``metrics.hallucination_rates``); ``coverage``: true objects a mention matches /
    all true objects; ``mean_words``; ``well_formed``: captions the world grammar parses.
    """
    from feedbacklab import metrics as M

    c = caption_checks(captions, scenes)
    _, mention_level = M.hallucination_rates(c["hallucinated_mentions"], c["mentions"])
    return {"response_level": float(c["hallucinated"].mean()),
            "object_response_level": float(c["object_hallucinated"].mean()),
            "mention_level": mention_level, "coverage": float(c["covered"].sum() / max(c["true_objects"].sum(), 1)),
            "mean_words": float(c["words"].mean()), "well_formed": float(c["parsed"].mean()),
            "count_error": float(c["count_wrong"].mean()), "relation_error": float(c["relation_wrong"].mean()),
            "background_error": float(c["background_wrong"].mean()), "n": int(len(c))}
