"""The ImageReward-style ranking reward, its pairwise data and loss, the aesthetic baseline, best-of-n helpers."""
import math

import numpy as np
import pytest
import torch

from feedbacklab import evaluation as ev
from feedbacklab import metrics as M
from feedbacklab.feedback import Ranking
from feedbacklab.feedback_sets import FeedbackSet, group_sizes, rank_feedback_set
from feedbacklab.rewards import (PairIndex, RankingTrainConfig, fit_aesthetic, fit_ranking_reward, load_reward,
                                 pairwise_loss)

PROMPT = "two red circles on a white background"


def brightness_rankings(n_groups: int, k: int, seed: int):
    """Groups of k flat grey images ranked brightest first: a preference any image backbone can see."""
    gen = torch.Generator().manual_seed(seed)
    rankings, images = [], {}
    for g in range(n_groups):
        levels = torch.rand(k, generator=gen) * 0.8 + 0.1
        ids = [f"s{seed}-g{g}-{i}" for i in range(k)]
        for i, level in zip(ids, levels):
            images[i] = (torch.full((3, 64, 64), float(level)) + 0.02 * torch.rand(3, 64, 64, generator=gen)).clamp(0, 1)
        order = torch.argsort(levels, descending=True).tolist()
        rankings.append(Ranking("a0", PROMPT, tuple(ids), tuple(order)))
    return rankings, images


@pytest.fixture(scope="module")
def trained():
    rankings, images = brightness_rankings(12, 4, seed=0)
    reward = load_reward("imagereward", device="cpu")
    history = fit_ranking_reward(reward, rankings, images, RankingTrainConfig(epochs=20, learning_rate=1e-3), progress=False)
    return reward, rankings, images, history


def test_pairwise_loss_hand_computed():
    loss = pairwise_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 0.0]))
    expected = (-math.log(1 / (1 + math.exp(-1))) - math.log(0.5)) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="same shape"):
        pairwise_loss(torch.zeros(2), torch.zeros(3))


def test_pair_index_expands_every_ordered_pair_and_checks_input():
    r = Ranking("a0", PROMPT, ("x", "y", "z"), (2, 0, 1))  # z ≻ x ≻ y
    pairs = PairIndex.from_rankings([r])
    named = {(pairs.item_ids[w], pairs.item_ids[lo]) for w, lo in zip(pairs.win.tolist(), pairs.lose.tolist())}
    assert named == {("z", "x"), ("z", "y"), ("x", "y")}
    with pytest.raises(ValueError, match="at least 2 images"):
        PairIndex.from_rankings([Ranking("a0", PROMPT, ("x",), (0,))])
    with pytest.raises(KeyError, match="no image"):
        PairIndex.from_rankings([r], {"x": torch.zeros(3, 8, 8)})
    with pytest.raises(ValueError, match="at least one"):
        PairIndex.from_rankings([])


def test_training_learns_a_held_out_preference_and_standardises(trained):
    reward, rankings, images, history = trained
    assert history[-1]["loss"] < history[0]["loss"]
    test_rankings, test_images = brightness_rankings(6, 4, seed=1)
    ids = list(test_images)
    with torch.no_grad():
        scores = reward.score([PROMPT] * len(ids), torch.stack([test_images[i] for i in ids])).numpy()
    brightness = np.array([test_images[i].mean().item() for i in ids])
    assert M.pairwise_accuracy(scores, brightness) > 0.8
    with torch.no_grad():  # standardised on the training images: mean 0, std 1
        train = reward.score([PROMPT] * len(images), torch.stack(list(images.values())))
    assert train.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert train.std().item() == pytest.approx(1.0, abs=1e-3)


def test_save_load_gives_identical_scores(trained, tmp_path):
    reward, _, images, _ = trained
    x = torch.stack(list(images.values())[:5])
    reward.save(tmp_path / "rm")
    again = load_reward(tmp_path / "rm", device="cpu")
    with torch.no_grad():
        assert torch.equal(reward.score(PROMPT, x), again.score(PROMPT, x))
    assert again.config.mean == reward.config.mean and again.config.std == reward.config.std


def test_score_is_differentiable_in_the_images(trained):
    reward = trained[0]
    x = torch.rand(2, 3, 64, 64, requires_grad=True)
    reward.score([PROMPT, "a red circle"], x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_only_the_top_layers_train():
    reward = load_reward("imagereward", device="cpu", freeze_fraction=0.7)
    model = reward.tokens.model
    blocks = model.visual.transformer.resblocks
    assert reward.tokens.n_frozen_image == round(0.7 * len(blocks))
    assert not any(p.requires_grad for p in blocks[0].parameters())
    assert all(p.requires_grad for p in blocks[-1].parameters())
    assert not model.token_embedding.weight.requires_grad
    frozen = load_reward("imagereward", device="cpu", freeze_fraction=1.0)
    assert not any(p.requires_grad for p in frozen.tokens.parameters())


def test_bad_input_is_rejected_before_work():
    with pytest.raises(ValueError, match="freeze_fraction"):
        load_reward("imagereward", device="cpu", freeze_fraction=1.5)
    with pytest.raises(ValueError, match="unknown reward"):
        load_reward("image-reward-typo")
    reward = load_reward("imagereward", device="cpu")
    with pytest.raises(ValueError, match="2 prompts for 3 images"):
        reward.score(["a", "b"], torch.rand(3, 3, 64, 64))
    with pytest.raises(ValueError, match="unknown CLIP"):
        load_reward("imagereward", clip="not-a-clip", device="cpu")


def test_official_imagereward_names_the_missing_package():
    pytest.importorskip("torch")
    try:
        import ImageReward  # noqa: F401
        pytest.skip("image-reward is installed")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="image-reward"):
        load_reward("ImageReward-v1.0")


def test_aesthetic_ignores_the_prompt_and_round_trips(tmp_path):
    rankings, images = brightness_rankings(8, 4, seed=2)
    reward = load_reward("aesthetic", device="cpu")
    fit_aesthetic(reward, rankings, images, RankingTrainConfig(epochs=20, learning_rate=1e-3), progress=False)
    x = torch.stack(list(images.values())[:6])
    assert torch.equal(reward.score(PROMPT, x), reward.score("a blue square", x))
    reward.save(tmp_path / "ae")
    assert torch.equal(load_reward(tmp_path / "ae", device="cpu").score(PROMPT, x), reward.score(PROMPT, x))


def test_best_of_n_hand_made_case():
    records = [{"prompt": p, "aligned": a, "n_artifacts": art} for p, a, art in
               [("p", 0, 1), ("p", 1, 0), ("p", 0, 0), ("q", 1, 0), ("q", 0, 1), ("q", 0, 0)]]
    scores = [0.1, 0.9, 0.5, 0.2, 0.8, 0.3]
    table = ev.best_of_n(scores, records, [1, 2, 3])
    assert table.loc[1, "aligned"] == 0.5 and table.loc[1, "artifact"] == 0.5   # first images: p0, q0
    assert table.loc[2, "aligned"] == 0.5 and table.loc[2, "artifact"] == 0.5   # picks p1 (aligned), q1 (artifact)
    assert table.loc[3, "aligned"] == 0.5                                        # picks p1, q1
    assert table.loc[3, "score"] == pytest.approx((0.9 + 0.8) / 2)              # the proxy of the picks
    rand = ev.best_of_n(None, records, [3])
    assert rand.loc[3, "aligned"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="at least n"):
        ev.best_of_n(scores, records, [4])


def test_consolidated_preference_is_minus_the_mean_rank():
    a = Ranking("a0", PROMPT, ("x", "y"), (0, 1))
    b = Ranking("a1", PROMPT, ("x", "y"), (1, 0))
    c = Ranking("a2", PROMPT, ("x", "y"), (0, 1))
    pref = ev.consolidated_preference([a, b, c])
    assert pref == {"x": pytest.approx(-4 / 3), "y": pytest.approx(-5 / 3)}


def test_group_sizes_and_rank_feedback_set():
    sizes = group_sizes(200, (4, 9), seed=0)
    assert min(sizes) == 4 and max(sizes) == 9
    with pytest.raises(ValueError, match="k_range"):
        group_sizes(3, (1, 4))
    from feedbacklab import world
    from feedbacklab.feedback import make_panel

    images = np.stack([world.render(world.parse(PROMPT), size=64, seed=i)[0] for i in range(6)])
    records = [{"prompt": PROMPT, "prompt_index": i // 3, "item_id": f"it{i}"} for i in range(6)]
    fs = FeedbackSet(images, records)
    rankings, used = rank_feedback_set(fs, make_panel(2, seed=0), [2, 3])
    assert len(rankings) == 4 and used.tolist() == [0, 1, 3, 4, 5]
    assert set(rankings[0].item_ids) == {"it0", "it1"}
    with pytest.raises(ValueError, match="2 <= k <= 3"):
        rank_feedback_set(fs, make_panel(2, seed=0), [4, 2])


def test_early_stopping_keeps_the_best_validation_epoch():
    rankings, images = brightness_rankings(8, 4, seed=3)
    val_rankings, val_images = brightness_rankings(4, 4, seed=4)
    reward = load_reward("imagereward", device="cpu")
    history = fit_ranking_reward(reward, rankings, images, RankingTrainConfig(epochs=4, learning_rate=1e-3),
                                 progress=False, val_rankings=val_rankings, val_images=val_images)
    assert history[0]["epoch"] == -1 and len(history) == 5
    best = max(history, key=lambda h: h["val_pair_accuracy"])
    assert reward.config.best_epoch == best["epoch"]
    from feedbacklab.rewards.pairwise import stack_images
    from feedbacklab.rewards.ranking import _cached_bottom, _pair_accuracy
    pairs = PairIndex.from_rankings(val_rankings, val_images)
    cached = _cached_bottom(reward, pairs, stack_images(val_images, pairs.item_ids))
    assert _pair_accuracy(reward, cached, pairs) == pytest.approx(best["val_pair_accuracy"])
