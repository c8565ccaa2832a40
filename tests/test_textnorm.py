"""TextNorm (Kim et al., ICLR 2024): the contrastive softmax on hand-computed cases, and ensembles of K rewards."""
import math

import numpy as np
import pytest
import torch

from feedbacklab.datasets import prompt_sets
from feedbacklab.rewards import (RewardEnsemble, RewardModel, TextNorm, combine_rewards, ensemble_scores,
                                 list_rewards, load_reward, normalize_rewards)
from feedbacklab.world import grammar

torch.set_num_threads(1)


class TableReward(RewardModel):
    """``r(z, y) = table[z] · mean(y)``: known numbers, differentiable in the images; records its calls."""

    name = "table"

    def __init__(self, table):
        super().__init__()
        self.table, self.calls = table, []

    def score(self, prompts, images):
        self.calls.append(list(prompts))
        weights = torch.tensor([self.table.get(p, 0.0) for p in prompts])
        return weights * images.mean(dim=(1, 2, 3))


def _images(*levels):
    """(B, 3, 4, 4) images of constant brightness ``levels``."""
    return torch.tensor(levels, dtype=torch.float32)[:, None, None, None].expand(-1, 3, 4, 4).clone()


TABLE = {"a": 1.0, "b": 0.0, "c": -1.0}
SETS = {"a": ["b", "c"], "b": ["a"]}


# ---------------------------------------------------------------- TextNorm

def test_textnorm_hand_computed():
    base = TableReward(TABLE)
    reward = TextNorm(base, tau=0.5, contrastive=SETS)
    out = reward.score(["a", "b"], _images(1.0, 0.5))
    # image 0, z = a: r/τ over (a, b, c) = (2, 0, -2); image 1, z = b: r/τ over (b, a) = (0, 0.5/0.5 = 1)
    expected = [math.exp(2) / (math.exp(2) + 1 + math.exp(-2)), 1 / (1 + math.e)]
    assert out.tolist() == pytest.approx(expected, rel=1e-6)
    # one base call over every (image, prompt') pair, the images repeated in step with the prompts
    assert base.calls == [["a", "b", "c", "b", "a"]]
    assert reward.score([], _images()).shape == (0,)


def test_textnorm_temperature_limits():
    reward = TextNorm(TableReward(TABLE), tau=1e-4, contrastive={**SETS, "c": ["a", "b"]})
    # τ → 0: the indicator of the argmax prompt ("a" beats "b" and "c"; "b" and "c" lose to "a")
    assert reward.score(["a", "b", "c"], _images(1.0, 1.0, 1.0)).tolist() == pytest.approx([1.0, 0.0, 0.0], abs=1e-6)
    # τ → ∞: 1 / (|C(z)| + 1) whatever the base reward says
    reward.tau = 1e9
    assert reward.score(["a", "b"], _images(1.0, 0.3)).tolist() == pytest.approx([1 / 3, 1 / 2], rel=1e-6)


def test_textnorm_is_stable_for_large_rewards():
    reward = TextNorm(TableReward({"a": 1e4, "b": 1e4 - 1}), tau=0.01, contrastive={"a": ["b"], "b": ["a"]})
    out = reward.score(["a", "b"], _images(1.0, 1.0))
    assert torch.isfinite(out).all() and out.tolist() == pytest.approx([1.0, 0.0], abs=1e-6)


def test_textnorm_gradient_flows_to_images():
    reward = TextNorm(TableReward(TABLE), tau=0.5, contrastive=SETS)
    images = _images(0.7, 0.2).requires_grad_(True)
    reward.score(["a", "b"], images).sum().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    # d r_TN / d mean(y) for z = a: p_a (r_a − Σ p r) / τ > 0, so brighter helps image 0; image 1 (z = b) loses
    assert (images.grad[0] > 0).all() and (images.grad[1] < 0).all()


@pytest.mark.parametrize("tau", [0, -1.0, float("nan"), float("inf"), True, "1"])
def test_textnorm_rejects_bad_temperature(tau):
    with pytest.raises(ValueError, match="tau is TextNorm's softmax temperature, a finite number > 0"):
        TextNorm(TableReward(TABLE), tau=tau, contrastive=SETS)


def test_textnorm_empty_or_missing_contrastive_sets_fail_before_scoring():
    base = TableReward(TABLE)
    with pytest.raises(ValueError, match="prompt 'b' has an empty contrastive set"):
        TextNorm(base, tau=1.0, contrastive={"a": ["b"], "b": []})
    # a set holding only the prompt itself is empty once the union {z} ∪ C(z) is taken
    reward = TextNorm(base, tau=1.0, contrastive={"a": ["b", "b", "a"], "b": ["b"]})
    assert reward.contrastive_set("a") == ["b"]
    with pytest.raises(ValueError, match="prompt 'b' has an empty contrastive set"):
        reward.score(["a", "b"], _images(1.0, 1.0))
    with pytest.raises(ValueError, match="prompt 'z' is not in the contrastive prompt set"):
        reward.score(["a", "z"], _images(1.0, 1.0))
    assert base.calls == []
    with pytest.raises(TypeError, match="base must be a RewardModel"):
        TextNorm(lambda p, y: y, tau=1.0)


def test_textnorm_defaults_to_the_world_edits():
    prompt = "two red circles on a white background"
    reward = TextNorm(TableReward({}), tau=1.0)
    assert reward.contrastive_set(prompt) == grammar.contrastive_prompts(prompt)
    n = len(grammar.contrastive_prompts(prompt))
    assert reward.score(prompt, _images(0.5)).item() == pytest.approx(1 / (n + 1))   # a constant base reward
    with pytest.raises(ValueError, match="outside the ShapesWorld grammar .* pass contrastive="):
        reward.score("a realistic photo of an airplane", _images(0.5))


def test_textnorm_is_registered_over_the_shipped_clip_score(tmp_path):
    assert "textnorm" in list_rewards()
    prompts = ["two red circles on a white background", "a red circle and a blue square on a black background"]
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    path = prompt_sets.write_prompt_set(prompt_sets.world_prompt_set(prompts), tmp_path / "prompt_set.json")
    reward = load_reward("textnorm", base="clip-score", tau=0.05, contrastive=path, device="cpu")
    assert isinstance(reward, TextNorm) and reward.base.name == "clip-score"
    out = reward.score(prompts, images)
    # the same softmax computed directly from CLIP scores
    for i, prompt in enumerate(prompts):
        candidates = [prompt] + grammar.contrastive_prompts(prompt)
        r = reward.base.score(candidates, images[i:i + 1].expand(len(candidates), -1, -1, -1))
        assert out[i].item() == pytest.approx(torch.softmax(r / 0.05, 0)[0].item(), rel=1e-4)
    with pytest.raises(TypeError, match="base is already a RewardModel"):
        load_reward("textnorm", base=reward.base, tau=1.0, device="cpu")


# ---------------------------------------------------------------- ensembles

A, B = [0.0, 5.0, 10.0], [1.0, 3.0, 2.0]   # min-max: (0, .5, 1) and (0, 1, .5)


def test_mean_ensemble_hand_computed():
    assert ensemble_scores([A, B]).tolist() == pytest.approx([0.0, 0.75, 0.75])
    assert ensemble_scores({"x": A, "y": B}, normalize=None).tolist() == pytest.approx([0.5, 4.0, 6.0])
    z = math.sqrt(1.5)   # z-scores: A → (−z, 0, z), B → (−z, z, 0)
    assert ensemble_scores(np.array([A, B]), normalize="zscore").tolist() == pytest.approx([-z, z / 2, z / 2])


def test_uncertainty_regularised_ensemble_hand_computed():
    # spread across the two normalised rewards: std (0, .25, .25), var (0, .0625, .0625)
    assert ensemble_scores([A, B], lam=1.0).tolist() == pytest.approx([0.0, 0.5, 0.5])
    assert ensemble_scores([A, B], lam=2.0, spread="var").tolist() == pytest.approx([0.0, 0.625, 0.625])
    # rewards that agree are not penalised
    assert ensemble_scores([A, [0.0, 1.0, 2.0]], lam=5.0).tolist() == pytest.approx([0.0, 0.5, 1.0])


def test_normalize_rewards_edge_cases():
    out = normalize_rewards(torch.tensor([[2.0, 2.0, 2.0], [1.0, 2.0, 3.0]]), "minmax")
    assert out.tolist() == [[0.0, 0.0, 0.0], [0.0, 0.5, 1.0]]   # a constant reward carries no ranking
    assert normalize_rewards(torch.tensor([[4.0, 4.0]]), "zscore").tolist() == [[0.0, 0.0]]
    with pytest.raises(ValueError, match=r"unknown normalize 'rank'; accepted: \('minmax', 'zscore', None\)"):
        ensemble_scores([A, B], normalize="rank")


def test_ensemble_input_errors():
    with pytest.raises(ValueError, match=r"same images; the score arrays differ in length: \{'x': 3, 'y': 2\}"):
        ensemble_scores({"x": A, "y": B[:2]})
    with pytest.raises(ValueError, match="1-D array over the images"):
        ensemble_scores([1.0, 2.0])
    with pytest.raises(ValueError, match="at least one reward"):
        ensemble_scores([])
    with pytest.raises(ValueError, match="NaN"):
        ensemble_scores([A, [1.0, float("nan"), 2.0]])
    with pytest.raises(ValueError, match="unknown spread 'mad'"):
        ensemble_scores([A, B], spread="mad")
    with pytest.raises(ValueError, match="lam weighs the spread penalty"):
        ensemble_scores([A, B], lam=-1.0)


def test_reward_ensemble_of_reward_models():
    x, y = TableReward({"a": 1.0, "b": 2.0}), TableReward({"a": 3.0, "b": -1.0})
    prompts, images = ["a", "b", "a"], _images(0.2, 0.5, 1.0).requires_grad_(True)
    ensemble = RewardEnsemble([x, y], lam=0.5)
    out = ensemble.score(prompts, images)
    with torch.no_grad():
        expected = combine_rewards(torch.stack([x.score(prompts, images), y.score(prompts, images)]), lam=0.5)
    assert out.tolist() == pytest.approx(expected.tolist())
    out.sum().backward()
    assert torch.isfinite(images.grad).all()
    # members that agree exactly (zero spread): the std penalty's gradient stays finite
    images.grad = None
    RewardEnsemble([x, x], lam=1.0).score(prompts, images).sum().backward()
    assert torch.isfinite(images.grad).all()

    class Short(RewardModel):
        name = "short"

        def score(self, prompts, images):
            return torch.zeros(len(prompts) - 1)

    with pytest.raises(ValueError, match=r"every reward must score the same 3 images; .*'1: short': \(2,\)"):
        RewardEnsemble([x, Short()]).score(prompts, images)
    with pytest.raises(ValueError, match="unknown spread"):
        RewardEnsemble([x, y], spread="range")
    with pytest.raises(TypeError, match="non-empty sequence of RewardModels"):
        RewardEnsemble([])


def test_textnorm_from_scores_is_the_softmax_of_the_prompt_column_and_ignores_padding():
    from feedbacklab.rewards.textnorm import textnorm_from_scores

    m = torch.tensor([[1.0, 0.0, -math.inf], [0.0, 1.0, 2.0]])
    r = textnorm_from_scores(m, 0.5)
    expected = [math.exp(2) / (math.exp(2) + 1), 1 / (1 + math.exp(2) + math.exp(4))]
    assert r.tolist() == pytest.approx(expected)
    with pytest.raises(ValueError, match="tau"):
        textnorm_from_scores(m, 0.0)


def test_select_tau_picks_the_temperature_with_the_best_per_prompt_auroc():
    from feedbacklab.rewards.textnorm import select_tau

    # the aligned image wins its set by a small margin over close contrastive prompts; the misaligned one loses
    # to one contrastive prompt but beats a far-off one: a small τ ranks by "is the prompt the best", a large τ
    # by the margin over the set's mean, which prefers the misaligned image
    m = torch.tensor([[1.0, 0.95, 0.95], [1.0, 1.05, -10.0]])
    labels, groups = [1, 0], ["a", "a"]
    best, table = select_tau(m, labels, groups, (0.01, 100.0))
    assert best == 0.01 and table[0.01] == pytest.approx(1.0) and table[100.0] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="undefined"):
        select_tau(m, [1, 1], groups, (0.1,))
    with pytest.raises(ValueError, match="taus is empty"):
        select_tau(m, labels, groups, ())


@pytest.mark.parametrize("name", ["clip-score", "clip-mlp", "imagereward", "rahf"])
def test_score_sets_equals_scoring_every_pair_separately(name):
    """Each reward's shortcut (image encoded once per set) gives the same numbers as repeating the image."""
    from feedbacklab.rewards import load_reward
    from feedbacklab.rewards.base import RewardModel

    torch.manual_seed(0)
    if name == "rahf":
        from feedbacklab.models.rahf import build_rahf
        from feedbacklab.rewards import RAHFReward

        reward = RAHFReward(build_rahf("multi-head", ["a red circle", "two blue squares"], clip="shapes-clip", device="cpu"),
                            aspect="alignment")
    elif name == "clip-mlp":
        from feedbacklab.rewards import ClipBackbone, ClipMLPReward

        reward = ClipMLPReward(ClipBackbone.from_name("shapes-clip", device="cpu"))
    else:
        reward = load_reward(name, clip="shapes-clip", device="cpu") if name == "imagereward" else load_reward(name)
    images = torch.rand(3, 3, 64, 64)
    sets = [["a red circle", "two red circles"], ["two blue squares"], ["a red circle", "one green star", "two blue squares"]]
    with torch.no_grad():
        fast = reward.score_sets(sets, images)
        slow = RewardModel.score_sets(reward, sets, images)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="one prompt set per image"):
        reward.score_sets(sets[:2], images)


def test_world_prompt_set_can_keep_only_count_edits():
    full = prompt_sets.world_prompt_set(["two red circles on a white background"])
    counts = prompt_sets.world_prompt_set(["two red circles on a white background"], attributes=("count",))
    edits = counts["two red circles on a white background"]
    assert edits and set(edits) < set(full["two red circles on a white background"])
    assert all(e.endswith("red circles on a white background") or e.endswith("red circle on a white background") for e in edits)
    with pytest.raises(ValueError, match="subset of"):
        prompt_sets.world_prompt_set(["two red circles on a white background"], attributes=("size",))
