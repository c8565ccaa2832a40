"""Tests of feedbacklab.models: tokenizer, tiny pipeline/CLIP/captioner build-save-load, training loops, loaders."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from feedbacklab import world
from feedbacklab.device import resolve_device
from feedbacklab.models import (ModelNotAvailableError, list_models, load_captioner, load_clip, load_generator,
                                models_dir)
from feedbacklab.models import data as wdata

torch.set_num_threads(1)


def _world_prompts(n: int = 30, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [world.prompt(world.sample_spec(rng, world.FAMILIES[i % 3], split="any")) for i in range(n)]


# ------------------------------------------------------------------------------------------ device
def test_resolve_device_auto_and_errors():
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="accepted"):
        resolve_device("tpu-please")
    with pytest.raises(TypeError):
        resolve_device(3)


# --------------------------------------------------------------------------------------- tokenizer
@pytest.fixture(scope="module")
def clip_tokenizer():
    from feedbacklab.models.tokenizer import build_clip_tokenizer

    return build_clip_tokenizer(model_max_length=16)


def test_clip_tokenizer_matches_open_clip(clip_tokenizer):
    import open_clip

    ref = open_clip.get_tokenizer("ViT-B-32")
    for p in _world_prompts() + ["A Red circle, to the LEFT of a blue square!"]:
        ours = clip_tokenizer(p).input_ids
        theirs = ref([p])[0].tolist()
        assert ours == theirs[: theirs.index(49407) + 1], p
    assert len(clip_tokenizer) == 49408 and clip_tokenizer.bos_token_id == 49406 and clip_tokenizer.eos_token_id == 49407


def test_clip_tokenizer_pads_to_max_length(clip_tokenizer):
    ids = clip_tokenizer(["two red circles"], padding="max_length", max_length=16, truncation=True).input_ids[0]
    assert len(ids) == 16 and ids[-1] == 49407


# ---------------------------------------------------------------------------------------- training data
def test_training_specs_never_unseen():
    specs = wdata.sample_specs(400, seed=1)
    assert not any(world.is_unseen(s) for s in specs)
    fams = {s.family for s in specs}
    assert fams == set(world.FAMILIES)
    with pytest.raises(ValueError, match="family_mix"):
        wdata.sample_specs(3, seed=0, family_mix={"nonsense": 1.0})


def test_image_conversion_round_trip():
    arr, _ = wdata.render_specs(wdata.sample_specs(3, seed=2), size=32)
    t = wdata.to_tensor(arr)
    assert t.shape == (3, 3, 32, 32) and 0 <= t.min() and t.max() <= 1
    assert np.array_equal(wdata.to_uint8(t), arr)


# ---------------------------------------------------------------------------------------- generator
def test_default_config_has_16px_latents_and_round_trips():
    from feedbacklab.models.generator import GeneratorConfig, build_vae

    cfg = GeneratorConfig()
    assert cfg.latent_size == 16
    assert GeneratorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with torch.no_grad():
        z = build_vae(cfg).encode(torch.zeros(1, 3, 64, 64)).latent_dist.mean
    assert z.shape == (1, 4, 16, 16)
    with pytest.raises(ValueError, match="unknown GeneratorConfig keys"):
        GeneratorConfig.from_dict({"widht": 3})


@pytest.fixture(scope="module")
def tiny_sd(tmp_path_factory):
    from feedbacklab.models.generator import GeneratorConfig, pretrain_unet, pretrain_vae

    root = tmp_path_factory.mktemp("sd")
    out = root / "tiny-sd"
    pretrain_vae(out, steps=3, batch_size=4, n_images=16, config=GeneratorConfig.tiny(), log=lambda m: None)
    first = pretrain_unet(out, steps=2, batch_size=4, n_images=16, work_dir=root / "work", log=lambda m: None)
    second = pretrain_unet(out, steps=4, batch_size=4, n_images=16, work_dir=root / "work", log=lambda m: None)
    return out, first, second


def test_tiny_pipeline_trains_resumes_and_reloads_offline(tiny_sd):
    from diffusers import StableDiffusionPipeline

    out, first, second = tiny_sd
    assert first["steps"] == 2 and second["steps"] == 4  # resumed from the saved state, not restarted
    card = json.loads((out / "card.json").read_text())
    assert card["vae_training"]["split"] == "seen" and card["unet_training"]["steps"] == 4
    assert {"hardware", "wall_s"} <= set(card["unet_training"])
    pipe = StableDiffusionPipeline.from_pretrained(out, local_files_only=True)
    assert pipe.safety_checker is None and pipe.tokenizer.model_max_length == 16
    pipe.set_progress_bar_config(disable=True)
    img = pipe("two red circles on a gray background", num_inference_steps=2, guidance_scale=3.0, height=32,
               width=32, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 32, 32, 3) and np.isfinite(img).all()


def test_load_generator_local_path_is_deterministic(tiny_sd):
    from feedbacklab.models.generator import generate

    out, _, _ = tiny_sd
    pipe = load_generator(out, device="cpu")
    a = generate(pipe, ["one blue square on a white background"] * 2, num_inference_steps=2, seed=3)
    b = generate(pipe, ["one blue square on a white background"] * 2, num_inference_steps=2, seed=3)
    assert a.dtype == np.uint8 and a.shape == (2, 32, 32, 3) and np.array_equal(a, b)


def test_hub_ids_fail_offline_with_clear_message():
    with pytest.raises(ModelNotAvailableError, match="(?s)stabilityai/stable-diffusion-2-1.*Shipped generator"):
        load_generator("stabilityai/stable-diffusion-2-1", device="cpu", local_files_only=True)
    with pytest.raises(ModelNotAvailableError, match="Shipped captioner"):
        load_captioner("nlpconnect/vit-gpt2-image-captioning", device="cpu", local_files_only=True)
    with pytest.raises(ValueError, match="ARCH/TAG"):
        load_clip("not a model", device="cpu")
    with pytest.raises(TypeError):
        load_generator(None)


def test_list_models_kinds():
    assert set(list_models()) <= {"shapes-sd", "shapes-sd-noisy-counts", "shapes-clip", "shapes-captioner",
                                  "shapes-captioner-crop"}
    assert list_models("generator").keys() <= {"shapes-sd", "shapes-sd-noisy-counts"}
    with pytest.raises(ValueError, match="accepted"):
        list_models("vocoder")


# --------------------------------------------------------------------------------------------- CLIP
def test_clip_save_and_reload_through_open_clip(tmp_path):
    import open_clip

    from feedbacklab.models.clip import WEIGHTS_FILE, build_clip, register_config, save_clip, train_clip

    clip = build_clip(seed=0)
    stats = train_clip(clip, steps=2, batch_size=8, n_images=32, log=lambda m: None)
    assert stats["steps"] == 2 and stats["split"] == "seen"
    save_clip(clip, tmp_path / "c")
    images = wdata.to_tensor(wdata.render_specs(wdata.sample_specs(3, seed=5), size=64)[0])
    prompts = _world_prompts(3)
    ref = clip.similarity(prompts, images)
    register_config()
    model, _, _ = open_clip.create_model_and_transforms("shapes-clip", pretrained=str(tmp_path / "c" / WEIGHTS_FILE))
    for k, v in clip.model.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    again = load_clip(tmp_path / "c", device="cpu")
    assert torch.allclose(again.similarity(prompts, images), ref, atol=1e-5)
    with pytest.raises(ValueError, match="one prompt per image"):
        again.similarity(prompts[:2], images)


def test_quality_captions_state_kind_and_degree_and_variants_exclude_their_own():
    from feedbacklab.models.clip import QUALITY_WORDS, build_clip, quality_caption, quality_variants, train_clip

    prompt = "three red squares on a white background"
    assert quality_caption(prompt) == f"a clean picture of {prompt}"
    assert quality_caption(prompt, "blur", 0.3) == f"a slightly blurry picture of {prompt}"
    assert quality_caption(prompt, "blur", 0.6) == f"a blurry picture of {prompt}"
    assert quality_caption(prompt, "fused", 0.9) == f"a very doubled picture of {prompt}"
    with pytest.raises(ValueError, match="accepted"):
        quality_caption(prompt, "sepia", 0.5)
    for kind, strength in ((None, 0.0), ("noise", 0.5), ("jpeg", 0.95)):
        variants = {quality_caption(prompt, k, s) for k, s in quality_variants(kind, strength)}
        assert quality_caption(prompt, kind, strength) not in variants
        assert len(variants) == 3 * (len(QUALITY_WORDS) - 1)  # clean + 9 kinds x 3 degrees, less its own
    clip = build_clip(seed=0)
    stats = train_clip(clip, steps=2, batch_size=8, n_images=32, quality_captions=1.0, hard_negatives=4,
                       quality_negatives=2, log=lambda m: None)
    assert stats["quality_captions"] == 1.0 and stats["steps"] == 2
    with pytest.raises(ValueError, match="quality_negatives"):
        train_clip(clip, steps=1, batch_size=8, n_images=32, hard_negatives=2, quality_negatives=3, log=lambda m: None)


def test_hard_negatives_put_every_focus_edit_first_and_fill_at_random():
    from feedbacklab.models.clip import HardNegatives

    attribute, spatial = "three red squares on a white background", "a yellow circle to the left of a purple triangle"
    sample = HardNegatives([attribute, spatial], focus=("count", "relation"))
    rng = random.Random(0)
    edits = {p: dict((world.prompt(v), a) for a, v in world.contrastive_specs(world.parse(p))) for p in (attribute, spatial)}
    for p in (attribute, spatial):
        got = sample(p, 6, rng)
        assert len(got) == len(set(got)) == 6 and set(got) <= set(edits[p])
        kinds = [edits[p][g] for g in got]
        assert kinds[:3] == ["count"] * 3 if p == attribute else kinds[:3] == ["relation"] * 3
        assert not {"count", "relation"} & set(kinds[3:])
    assert len(sample(attribute, 2, rng)) == 2  # fewer slots than focus edits: a random subset of them
    # without focus: exactly the old random draw over all one-attribute edits
    plain = HardNegatives([attribute])
    assert plain(attribute, 4, random.Random(3)) == random.Random(3).sample(world.contrastive_prompts(attribute), 4)


def test_cosine_learning_rate_after_warmup_matches_the_formula():
    import math

    from feedbacklab.models.training import WarmupSteps

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.0)
    run = WarmupSteps(opt, 1e-3, 10, 110, 4, "t", lambda m: None, 100, cosine=True)
    assert run.lr_at(4) == pytest.approx(5e-4)  # linear warm-up
    assert run.lr_at(10) == pytest.approx(1e-3) and run.lr_at(60) == pytest.approx(5e-4)
    assert run.lr_at(35) == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 0.25))) and run.lr_at(110) == 0
    flat = WarmupSteps(opt, 1e-3, 10, 110, 4, "t", lambda m: None, 100)
    assert flat.lr_at(60) == flat.lr_at(109) == pytest.approx(1e-3)


def test_retrieval_accuracy_perfect_for_an_oracle_like_scorer():
    """retrieval_accuracy on a fake CLIP whose text features encode the prompt and images encode the truth."""
    from feedbacklab.models.clip import retrieval_accuracy

    prompts = _world_prompts(6, seed=3)

    class Oracle:
        def image_features(self, images):
            return torch.eye(64)[: len(images)]

        def text_features(self, texts):
            return torch.stack([torch.eye(64)[prompts.index(t)] if t in prompts else torch.zeros(64) for t in texts])

    acc = retrieval_accuracy(Oracle(), prompts, torch.zeros(len(prompts), 3, 8, 8))
    assert acc["all"] == 1.0 and acc["n"] == 6


# ---------------------------------------------------------------------------------------- captioner
def test_caption_tokenizer_round_trip(tmp_path):
    from transformers import AutoTokenizer

    from feedbacklab.models.captioner import build_caption_tokenizer

    tok = build_caption_tokenizer()
    tok.save_pretrained(tmp_path)
    again = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    for p in _world_prompts(12):
        ids = tok(p).input_ids
        assert ids == again(p).input_ids and ids[-1] == tok.eos_token_id and tok.unk_token_id not in ids
        assert again.decode(ids, skip_special_tokens=True) == p


def test_caption_quality_hand_computed():
    from feedbacklab.evaluation import caption_quality

    spec = world.parse("two red circles on a gray background")
    _, scene = world.render(spec, size=64, seed=0)
    caps = ["two red circles on a gray background",       # right
            "three red circles on a gray background",     # one extra object: 1 wrong of 3, count wrong
            "a red circle and a blue square on a gray background",  # 1 wrong of 2
            "purple purple purple"]                        # unparseable
    r = caption_quality(caps, [scene] * 4)
    assert r["response_level"] == pytest.approx(3 / 4)
    assert r["mention_level"] == pytest.approx((0 + 1 + 1) / (2 + 3 + 2))
    assert r["well_formed"] == pytest.approx(3 / 4)
    assert r["coverage"] == pytest.approx((2 + 2 + 1 + 0) / 8)
    assert r["mean_words"] == pytest.approx((7 + 7 + 11 + 3) / 4)


def test_captioner_trains_saves_and_loads(tmp_path):
    from feedbacklab.models.captioner import build_captioner, random_crop, train_captioner

    cap = build_captioner(seed=0)
    stats = train_captioner(cap, steps=2, batch_size=4, n_images=16, crop=True, log=lambda m: None)
    assert stats["steps"] == 2 and stats["augmentation"].startswith("random crop")
    cap.save(tmp_path / "cap")
    again = load_captioner(tmp_path / "cap", device="cpu")
    images = wdata.to_tensor(wdata.render_specs(wdata.sample_specs(2, seed=7), size=64)[0])
    assert again.caption(images) == cap.caption(images)
    cropped = random_crop(images, torch.Generator().manual_seed(0))
    assert cropped.shape == images.shape and not torch.equal(cropped, images)


# ------------------------------------------------------------------------------------ shipped models
SHIPPED = list_models()


@pytest.mark.skipif("shapes-sd" not in SHIPPED, reason="shapes-sd not built")
def test_shipped_generator_loads_offline_and_has_quality_table():
    pipe = load_generator("shapes-sd", device="cpu")
    assert type(pipe).__name__ == "StableDiffusionPipeline"
    card = json.loads((SHIPPED["shapes-sd"] / "card.json").read_text())
    assert {"config", "vae_training", "unet_training"} <= set(card)
    if "quality" in card:
        assert card["quality"]["seen"]["n"] + card["quality"]["unseen"]["n"] >= 500


@pytest.mark.skipif("shapes-clip" not in SHIPPED, reason="shapes-clip not built")
def test_shipped_clip_loads_offline():
    clip = load_clip("shapes-clip", device="cpu")
    assert clip.image_size == 64


def test_shipped_checkpoints_fit_the_size_budget():
    root = models_dir()
    total = sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file()) if root.is_dir() else 0
    assert total <= 60 * 2**20, f"data/models is {total / 2**20:.1f} MiB > 60 MiB"


# ------------------------------------------------------------------------------------------- evaluation
def test_judge_table_is_perfect_on_true_renders_and_rejects_mismatch():
    from feedbacklab.models.evaluate import eval_prompts, judge_table

    pairs = eval_prompts(12, seed=1)
    assert sum(s == "unseen" for s, _ in pairs) == 4
    assert all(world.is_unseen(world.parse(p)) == (s == "unseen") for s, p in pairs)
    prompts = [p for _, p in pairs]
    images = np.stack([world.render(world.parse(p), size=64, seed=i)[0] for i, p in enumerate(prompts)])
    table = judge_table(prompts, images)
    assert table["all_right"] == 1.0 and table["color_acc"] == 1.0 and table["n"] == 12
    with pytest.raises(ValueError, match="equally many"):
        judge_table(prompts[:3], images)


def test_models_readme_lists_cards(tmp_path):
    from feedbacklab.models.evaluate import models_readme
    from feedbacklab.models.registry import update_card

    update_card(tmp_path / "shapes-captioner", hallucination={"rendered_seen": {"response_level": 0.25,
                                                                                "mention_level": 0.1, "n": 8}})
    text = models_readme(tmp_path)
    assert "| shapes-captioner (rendered_seen) | 0.25 | 0.10 | – | – | 8 |" in text and "shapes-sd" not in text


# ------------------------------------------------------------------------------------------ reproduction
def _fake_cards(root: Path) -> None:
    from feedbacklab.models.generator import GeneratorConfig
    from feedbacklab.models.registry import update_card

    update_card(root / "shapes-sd", config=GeneratorConfig.tiny().to_dict(),
                vae_training={"steps": 7, "batch_size": 2, "n_images": 9, "lr": 1e-3, "seed": 1, "wall_s": 5.0,
                              "total_wall_s": 6.0, "hardware": "CPU x"},
                unet_training={"steps": 30, "batch_size": 3, "n_images": 11, "lr": 2e-4, "cfg_dropout": 0.2,
                               "ema_decay": 0.9, "seed": 1, "wall_s": 40.0, "hardware": "CPU x",
                               "phases": [{"lr": 1e-3, "from_step": 0, "to_step": 20},
                                          {"lr": 2e-4, "from_step": 20, "to_step": 30}]})
    update_card(root / "shapes-clip", kind="clip", training={"steps": 5, "batch_size": 4, "n_images": 8, "lr": 1e-3,
                                                             "seed": 2, "wall_s": 3.0, "hardware": "CPU x"})
    update_card(root / "shapes-sd-noisy-counts", kind="generator",
                noisy_caption_training={"wrong_count_probability": 0.4, "steps": 6, "batch_size": 4, "n_images": 8,
                                        "lr": 3e-4, "seed": 4, "wall_s": 2.0, "hardware": "CPU x"})
    for name, aug in (("shapes-captioner", "none"), ("shapes-captioner-crop", "random crop (...)")):
        update_card(root / name, kind="captioner", training={"steps": 6, "batch_size": 4, "n_images": 8, "lr": 1e-3,
                                                             "seed": 3, "augmentation": aug, "wall_s": 2.0})


def test_card_recipe_replays_recorded_settings_and_phases(tmp_path):
    from feedbacklab.models.generator import GeneratorConfig
    from feedbacklab.models.reproduce import Stage, card_recipe, recipe

    _fake_cards(tmp_path)
    stages = card_recipe(tmp_path)
    assert [(s.model, s.component) for s in stages] == [
        ("shapes-sd", "vae"), ("shapes-sd", "unet"), ("shapes-sd", "unet"), ("shapes-clip", "clip"),
        ("shapes-captioner", "captioner"), ("shapes-captioner-crop", "captioner"),
        ("shapes-sd-noisy-counts", "noisy-captions")]
    assert stages[0].kwargs == {"config": GeneratorConfig.tiny(), "steps": 7, "batch_size": 2, "n_images": 9,
                                "lr": 1e-3, "seed": 1}
    assert [(s.kwargs["lr"], s.kwargs["steps"]) for s in stages[1:3]] == [(1e-3, 20), (2e-4, 30)]
    assert stages[1].kwargs["cfg_dropout"] == 0.2 and stages[3].kwargs["seed"] == 2
    # a card written before the CLIP options existed replays their old values
    assert {k: stages[3].kwargs[k] for k in ("hard_negatives", "focus_attributes", "cosine")} == {
        "hard_negatives": 4, "focus_attributes": (), "cosine": False}
    assert [s.kwargs["crop"] for s in stages[4:6]] == [False, True]
    assert stages[6].kwargs == {"steps": 6, "batch_size": 4, "n_images": 8, "lr": 3e-4, "seed": 4, "wrong_count": 0.4}
    with pytest.raises(ValueError, match="accepted"):
        recipe("huge")
    with pytest.raises(ValueError, match="no 'vae_training' section"):
        card_recipe(tmp_path / "nothing-here")
    with pytest.raises(ValueError, match="unknown component"):
        Stage("shapes-sd", "decoder")


@pytest.mark.skipif("shapes-sd" not in SHIPPED, reason="shapes-sd not built")
def test_card_recipe_of_shipped_cards_ends_at_the_shipped_step_count():
    from feedbacklab.models.reproduce import card_recipe

    card = json.loads((SHIPPED["shapes-sd"] / "card.json").read_text())
    unet = [s for s in card_recipe() if s.component == "unet"]
    assert unet[-1].kwargs["steps"] == card["unet_training"]["steps"]
    assert len(unet) == len(card["unet_training"]["phases"])


def test_training_table_rows_from_cards(tmp_path):
    from feedbacklab.models.reproduce import training_table

    _fake_cards(tmp_path)
    rows = {(r["model"], r["stage"]): r for r in training_table(tmp_path)}
    assert len(rows) == 6
    assert rows[("shapes-sd-noisy-counts", "UNet + text encoder, miscounted captions")]["steps"] == 6
    assert rows[("shapes-sd", "VAE")]["wall_s"] == 6.0  # total wall time (rendering included) when recorded
    assert rows[("shapes-sd", "UNet + text encoder")]["lr"] == "0.001 → 0.0002"
    assert rows[("shapes-clip", "clip")]["hardware"] == "CPU x" and rows[("shapes-clip", "clip")]["steps"] == 5


def test_retrain_tiny_recipe_builds_loadable_models(tmp_path):
    from feedbacklab.models.reproduce import retrain, tiny_recipe

    rows = retrain(tiny_recipe(), tmp_path / "m", tmp_path / "w", log=lambda m: None)
    assert [r["steps"] for r in rows] == [3, 2, 4, 2, 2, 2, 2]  # the second unet call resumed to step 4
    noisy = json.loads((tmp_path / "m" / "shapes-sd-noisy-counts" / "card.json").read_text())
    assert noisy["noisy_caption_training"]["base"] == str(tmp_path / "m" / "shapes-sd")
    assert load_generator(tmp_path / "m" / "shapes-sd-noisy-counts", device="cpu").vae.config.sample_size == 32
    card = json.loads((tmp_path / "m" / "shapes-sd" / "card.json").read_text())
    assert [p["to_step"] for p in card["unet_training"]["phases"]] == [2, 4]
    assert load_generator(tmp_path / "m" / "shapes-sd", device="cpu").vae.config.sample_size == 32  # tiny
    assert load_clip(tmp_path / "m" / "shapes-clip", device="cpu").image_size == 64
    crop = json.loads((tmp_path / "m" / "shapes-captioner-crop" / "card.json").read_text())
    assert crop["training"]["augmentation"].startswith("random crop")
    again = retrain(tiny_recipe()[:1], tmp_path / "m", tmp_path / "w", log=lambda m: None)  # fresh, not resumed
    assert again[0]["steps"] == 3
    assert "unet_training" not in json.loads((tmp_path / "m" / "shapes-sd" / "card.json").read_text())


def test_retrain_refuses_the_shipped_directory_and_unknown_models(tmp_path):
    from feedbacklab.models.reproduce import Stage, retrain

    with pytest.raises(ValueError, match="ship=True"):
        retrain([], models_dir(), tmp_path)
    with pytest.raises(ValueError, match="unknown model"):
        retrain([Stage("my-sd", "vae")], tmp_path, tmp_path)


def test_flatten_keeps_finite_numbers_only():
    from feedbacklab.models.evaluate import flatten

    tables = {"seen": {"n": 4, "acc": 0.5, "name": "x", "ok": True, "bad": float("nan")}, "all": np.float64(0.25)}
    assert flatten(tables, "gen") == {"gen_seen_n": 4.0, "gen_seen_acc": 0.5, "gen_all": 0.25}
    assert flatten({}) == {}


def test_models_readme_has_training_record_and_throughput(tmp_path):
    from feedbacklab.models.evaluate import models_readme
    from feedbacklab.models.registry import update_card

    _fake_cards(tmp_path)
    update_card(tmp_path / "shapes-clip", benchmarks={"command": "python b.py", "hardware": "CPU x", "note": "shared",
                                                      "results": [{"what": "scoring", "images_per_s": 812.345,
                                                                   "setup": "batch 64"}]})
    text = models_readme(tmp_path)
    assert "| shapes-sd | UNet + text encoder | 30 | 3 | 11 | 0.001 → 0.0002 | 40.0 | CPU x |" in text
    assert "`python b.py` on CPU x (shared):" in text and "| shapes-clip | scoring | 812.3 | batch 64 |" in text


def test_warmup_steps_ramp_the_learning_rate_and_average_the_loss():
    from feedbacklab.models.training import WarmupSteps

    w = torch.nn.Parameter(torch.tensor(1.0))
    opt = torch.optim.SGD([w], lr=0.0)
    lines = []
    run = WarmupSteps(opt, lr=0.4, warmup=4, steps=3, batch_size=2, label="t", log=lines.append, log_every=2)
    seen_lr = []
    while run.running():
        run(w * 0 + float(run.step + 1))  # losses 1, 2, 3 (no gradient on w)
        seen_lr.append(opt.param_groups[0]["lr"])
    assert seen_lr == pytest.approx([0.1, 0.2, 0.3]) and run.step == 3
    assert run.loss_avg == pytest.approx(0.95 * (0.95 * 1 + 0.05 * 2) + 0.05 * 3)
    assert len(lines) == 1 and lines[0].startswith("t step 2/3 loss 1.050")
