"""Rewards: Lee et al. (2023)'s two losses on hand-computed cases, the CLIP+MLP reward, registry, save/load."""
import math

import numpy as np
import pytest
import torch

from feedbacklab.rewards import (ClipBackbone, ClipMLPConfig, ClipMLPReward, ClipScore, RewardModel,
                                 RewardTrainConfig, fit_reward, list_rewards, load_reward, mse_loss,
                                 prompt_classification_loss, register, reward_loss)
from feedbacklab.rewards.clip_mlp import PromptTable, RewardHead, train_head

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def backbone():
    """An untrained tiny OpenCLIP (the shipped shapes-clip architecture) as a frozen backbone."""
    from feedbacklab.models.clip import build_clip

    loaded = build_clip(seed=0)
    return ClipBackbone(loaded.model, loaded.tokenizer, name="shapes-clip")


# ---------------------------------------------------------------- losses, hand-computed

def test_mse_loss_hand_computed():
    rewards, labels = torch.tensor([0.2, 0.9, -0.5]), torch.tensor([0.0, 1.0, 1.0])
    assert mse_loss(rewards, labels).item() == pytest.approx((0.04 + 0.01 + 2.25) / 3)


def test_mse_loss_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="same shape"):
        mse_loss(torch.zeros(3), torch.zeros(2))


def test_prompt_classification_loss_hand_computed():
    # image 1: true prompt reward 2 vs two perturbed at 0 → −log(e²/(e²+2)); image 2: 0 vs 1 → −log(1/(1+e))
    rewards = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 7.0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    expected = (math.log(1 + 2 * math.exp(-2)) + math.log(1 + math.e)) / 2
    assert prompt_classification_loss(rewards, mask).item() == pytest.approx(expected, rel=1e-6)


def test_prompt_classification_loss_is_shift_invariant_and_rewards_the_true_prompt():
    r = torch.tensor([[0.3, -0.2, 0.1, 0.0]])
    assert prompt_classification_loss(r + 5.0).item() == pytest.approx(prompt_classification_loss(r).item(), rel=1e-6)
    better = r.clone()
    better[0, 0] += 1.0
    assert prompt_classification_loss(better) < prompt_classification_loss(r)
    assert prompt_classification_loss(torch.zeros(1, 4)).item() == pytest.approx(math.log(4))


def test_prompt_classification_loss_input_errors():
    with pytest.raises(ValueError, match="1\\+T"):
        prompt_classification_loss(torch.zeros(3))
    with pytest.raises(ValueError, match="column 0"):
        prompt_classification_loss(torch.zeros(1, 3), torch.tensor([[False, True, True]]))
    assert prompt_classification_loss(torch.zeros(0, 3)).item() == 0.0


def test_reward_loss_is_mse_plus_lambda_pc_over_positive_images():
    torch.manual_seed(0)
    head = RewardHead(ClipMLPConfig(embed_dim=4, hidden_dims=(8,), dropout=0.0)).eval()
    img, txt = torch.randn(3, 4), torch.randn(5, 4)
    prompt_idx, labels = torch.tensor([0, 1, 0]), torch.tensor([1.0, 1.0, 0.0])
    perturbed = torch.tensor([[2, 3], [4, -1]])  # prompt 0 → {2, 3}; prompt 1 → {4}
    out = reward_loss(head, img, txt, prompt_idx, labels, perturbed, lambda_pc=0.5)
    with torch.no_grad():
        r = torch.stack([head(img[i], txt[prompt_idx[i]]) for i in range(3)])
        mse = ((labels - r) ** 2).mean()
        pc0 = -torch.log_softmax(torch.stack([head(img[0], txt[k]) for k in (0, 2, 3)]), 0)[0]
        pc1 = -torch.log_softmax(torch.stack([head(img[1], txt[k]) for k in (1, 4)]), 0)[0]
    assert out["mse"].item() == pytest.approx(mse.item(), rel=1e-5)
    assert out["pc"].item() == pytest.approx(((pc0 + pc1) / 2).item(), rel=1e-5)
    assert out["loss"].item() == pytest.approx((mse + 0.5 * (pc0 + pc1) / 2).item(), rel=1e-5)
    assert reward_loss(head, img, txt, prompt_idx, labels, perturbed, lambda_pc=0.0)["loss"].item() == \
        pytest.approx(mse.item(), rel=1e-5)


def test_prompt_table_indexes_true_and_perturbed_prompts():
    table = PromptTable.build(["a", "b", "a"], lambda p: {"a": ["x", "y"], "b": ["y"]}[p])
    assert table.prompts == ["a", "b", "x", "y"]
    assert table.perturbed.tolist() == [[2, 3], [3, -1]]
    assert table.index_of(["b", "a"]).tolist() == [1, 0]


def test_train_head_learns_alignment_and_pc_separates_prompts():
    """Synthetic embeddings: label 1 iff the image embedding is the prompt's (plus noise)."""
    gen = torch.Generator().manual_seed(0)
    prompts = torch.nn.functional.normalize(torch.randn(6, 8, generator=gen), dim=-1)
    perturbed = torch.tensor([[j for j in range(6) if j != i] for i in range(6)])
    shown = torch.randint(0, 6, (300,), generator=gen)       # which prompt the image depicts
    asked = torch.randint(0, 6, (300,), generator=gen)        # which prompt it is paired with
    asked[:150] = shown[:150]
    img = torch.nn.functional.normalize(prompts[shown] + 0.1 * torch.randn(300, 8, generator=gen), dim=-1)
    labels = (shown == asked).float()
    accs = {}
    for lam in (0.0, 1.0):
        torch.manual_seed(0)
        head = RewardHead(ClipMLPConfig(embed_dim=8, hidden_dims=(32,), dropout=0.0))
        cfg = RewardTrainConfig(lambda_pc=lam, epochs=60, batch_size=32, learning_rate=3e-3)
        hist = train_head(head, img, labels, asked, prompts, perturbed, cfg, progress=False)
        assert hist[-1]["mse"] < hist[0]["mse"]
        with torch.no_grad():
            acc = ((head(img, prompts[asked]) > 0.5).float() == labels).float().mean().item()
            top1 = (head(img[:150, None], prompts[None]).argmax(1) == shown[:150]).float().mean().item()
        accs[lam] = (acc, top1)
    assert accs[0.0][0] > 0.9 and accs[1.0][0] > 0.9
    assert accs[1.0][1] >= accs[0.0][1] and accs[1.0][1] > 0.95


# ---------------------------------------------------------------- interface, CLIP score, save/load

def test_registry_lists_and_rejects_unknown_names(tmp_path):
    assert {"clip-score", "clip-mlp"} <= set(list_rewards())
    with pytest.raises(ValueError, match="registered"):
        load_reward("no-such-reward")

    class Constant(RewardModel):
        def score(self, prompts, images):
            return torch.ones(len(images))

    register("test-constant")(Constant)
    assert "test-constant" in list_rewards()
    assert load_reward("test-constant").score(["a", "b"], torch.rand(2, 3, 8, 8)).tolist() == [1.0, 1.0]


def test_score_input_validation(backbone):
    reward = ClipScore(backbone)
    with pytest.raises(TypeError, match="float"):
        reward.score(["a"], torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match="one prompt per image"):
        reward.score(["a", "b"], torch.rand(3, 3, 64, 64))
    with pytest.raises(ValueError, match="B, 3, H, W"):
        reward.score(["a"], torch.rand(3, 64, 64))
    assert reward.score("one red circle on a white background", torch.rand(2, 3, 64, 64)).shape == (2,)


def test_clip_score_is_cosine_similarity_of_open_clip_embeddings(backbone):
    images, prompts = torch.rand(3, 3, 64, 64), ["one red circle on a white background", "two blue squares on a "
                                                 "black background", "one red circle on a white background"]
    with torch.no_grad():
        x = (images - backbone.mean) / backbone.std  # 64 px input: the preprocessing is only the normalisation
        img = torch.nn.functional.normalize(backbone.model.encode_image(x), dim=-1)
        txt = torch.nn.functional.normalize(backbone.model.encode_text(backbone.tokenizer(prompts)), dim=-1)
    assert torch.allclose(ClipScore(backbone).score(prompts, images), (img * txt).sum(-1), atol=1e-5)
    assert ClipScore(backbone).score(prompts, images).abs().max() <= 1.0 + 1e-6


def test_tensor_preprocessing_matches_open_clips_pil_transform(backbone):
    """A non-square uint8 image: our tensor path vs open_clip's own PIL preprocess (resize shortest + crop)."""
    import open_clip
    from PIL import Image

    image = (np.random.default_rng(0).random((80, 100, 3)) * 255).astype(np.uint8)
    image = np.kron(image[::4, ::4], np.ones((4, 4, 1))).astype(np.uint8)  # smooth-ish blocks
    pil = open_clip.image_transform(backbone.image_size[0], is_train=False, mean=backbone.mean.flatten().tolist(),
                                    std=backbone.std.flatten().tolist())(Image.fromarray(image))
    ours = backbone.preprocess(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)[0]
    assert ours.shape == pil.shape == (3, 64, 64)
    assert (ours - pil).abs().mean() < 0.05


def test_text_embeddings_are_cached(backbone, monkeypatch):
    calls = []
    original = backbone.model.encode_text
    monkeypatch.setattr(backbone.model, "encode_text", lambda t, **kw: calls.append(len(t)) or original(t, **kw))
    first = backbone.embed_texts(["cache test a", "cache test b", "cache test a"])
    again = backbone.embed_texts(["cache test b", "cache test a"])
    assert calls == [2]
    assert torch.equal(first[1], again[0]) and torch.equal(first[0], first[2])


def test_clip_mlp_save_load_round_trip(backbone, tmp_path):
    torch.manual_seed(0)
    reward = ClipMLPReward(backbone, ClipMLPConfig(clip="shapes-clip", hidden_dims=(16, 8), dropout=0.2))
    images = torch.rand(4, 3, 64, 64)
    prompts = ["one red circle on a white background", "two blue squares on a black background"] * 2
    fit_reward(reward, backbone.embed_images(images), prompts, torch.tensor([1, 0, 0, 1]),
               RewardTrainConfig(epochs=2), perturb=lambda p: ["three green triangles on a white background"],
               progress=False)
    path = reward.save(tmp_path / "reward")
    assert sorted(p.name for p in path.iterdir()) == ["head.safetensors", "reward_config.json"]
    loaded = load_reward(path, clip=backbone)
    assert isinstance(loaded, ClipMLPReward) and loaded.config == reward.config
    assert torch.equal(loaded.score(prompts, images), reward.score(prompts, images))
    assert torch.allclose(reward.score_embeddings(backbone.embed_images(images), prompts), reward.score(prompts, images))
    again = load_reward("clip-mlp", path=path, clip=backbone)
    assert torch.equal(again.score(prompts, images), reward.score(prompts, images))


def test_clip_mlp_load_errors(backbone, tmp_path):
    with pytest.raises(ValueError, match="registered"):
        load_reward(tmp_path)  # an empty directory is neither a name nor a saved reward
    with pytest.raises(FileNotFoundError, match="clip-mlp"):
        ClipMLPReward.load(tmp_path, clip=backbone)
    with pytest.raises(ValueError, match="embed"):
        ClipMLPReward(backbone, ClipMLPConfig(embed_dim=3))
    with pytest.raises(ValueError, match="features"):
        ClipMLPConfig(features="sum")


def test_ddpo_style_reward_fn(backbone):
    fn = ClipScore(backbone).as_ddpo_fn()
    rewards, info = fn(torch.rand(2, 3, 64, 64), ["one red circle on a white background"] * 2, None)
    assert rewards.shape == (2,) and info == {}


def test_clip_score_loads_an_open_clip_directory_by_path(tmp_path):
    """The name path of ``load_reward`` goes through ``models.load_clip`` (here: an open_clip hub-layout dir)."""
    from feedbacklab.models.clip import build_clip, save_clip

    loaded = build_clip(seed=1)
    save_clip(loaded, tmp_path / "clip")
    reward = load_reward("clip-score", clip=str(tmp_path / "clip"), device="cpu")
    direct = ClipScore(ClipBackbone.resolve(loaded))
    images, prompts = torch.rand(2, 3, 64, 64), ["one red circle on a white background"] * 2
    assert torch.allclose(reward.score(prompts, images), direct.score(prompts, images), atol=1e-5)
    with pytest.raises(TypeError, match="clip must be"):
        ClipBackbone.resolve(3)


def test_oracle_reward_is_the_oracles_latent_alignment():
    import numpy as np

    from feedbacklab import world
    from feedbacklab.feedback.annotators import latent_scores
    from feedbacklab.rewards import load_reward

    prompt = "two red circles on a white background"
    right = world.render(world.parse(prompt), seed=0)[0]
    wrong = world.render(world.parse("three blue squares on a white background"), seed=0)[0]
    x = torch.from_numpy(np.stack([right, wrong])).permute(0, 3, 1, 2).float() / 255
    r = load_reward("oracle").score([prompt, prompt], x)
    assert r[0].item() == 1.0 and r[1].item() < 1.0
    assert r[1].item() == pytest.approx(latent_scores(world.judge(prompt, wrong))["alignment"])
    with pytest.raises(ValueError, match="unknown oracle aspect"):
        load_reward("oracle", aspect="beauty")
