"""DPO, dense DPO and SFT (finetune.preference) and the oracle's caption check (world.check_caption)."""
import math

import pytest
import torch

from feedbacklab import world
from feedbacklab.feedback.annotators import make_correction
from feedbacklab.finetune.preference import (PreferenceConfig, PreferencePair, dense_logprob, dpo_loss,
                                             encode_responses, pairs_from_corrections, preference_finetune,
                                             preference_loss, reference_logprobs, sequence_logprob, sft_examples,
                                             token_logprobs)


@pytest.fixture(scope="module")
def captioner():
    from feedbacklab.models import load_captioner

    return load_captioner("shapes-captioner-crop", device="cpu")


def _pairs(n=8):
    specs = [world.parse(p) for p in ("three red squares on a beige background", "one blue circle on a black background",
                                      "a red square and a yellow triangle on a gray background",
                                      "two green triangles on a white background")]
    pairs = []
    for i in range(n):
        spec = specs[i % len(specs)]
        img, scene = world.render(spec, size=64, seed=i)
        wrong = world.prompt(world.contrastive_specs(spec)[i % 3][1])
        c = make_correction("a", f"i{i}", wrong, world.describe(scene))
        pairs.append(PreferencePair(torch.from_numpy(img).permute(2, 0, 1).float() / 255, c.corrected, c.original,
                                    c.corrected_char_spans, c.original_char_spans, item_id=c.item_id))
    return pairs


# ------------------------------------------------------------------ losses on hand-computed log-probs

def test_dpo_loss_hand_computed():
    pw, pl, rw, rl = (torch.tensor([v]) for v in (-2.0, -5.0, -3.0, -4.0))
    loss, r_w, r_l = dpo_loss(pw, pl, rw, rl, beta=0.5)
    margin = 0.5 * ((-2 + 3) - (-5 + 4))  # 1.0
    assert float(loss) == pytest.approx(math.log1p(math.exp(-margin)))
    assert float(r_w) == pytest.approx(0.5) and float(r_l) == pytest.approx(-0.5)


def test_dpo_loss_is_log2_when_policy_equals_reference():
    lp = torch.randn(5)
    loss, _, _ = dpo_loss(lp, lp - 1, lp, lp - 1, beta=0.5)
    assert torch.allclose(loss, torch.full((5,), math.log(2)))


def test_dense_logprob_hand_computed_and_gamma_one_is_length_normalised():
    logps = torch.tensor([[-1.0, -2.0, -3.0, 0.0]])
    mask = torch.tensor([[True, True, True, False]])
    changed = torch.tensor([[False, True, False, True]])  # the padded position must not count
    assert float(dense_logprob(logps, mask, changed, 5.0)) == pytest.approx((-1 - 3 + 5 * -2) / (2 + 5))
    assert float(dense_logprob(logps, mask, changed, 1.0)) == pytest.approx(-6 / 3)
    assert float(sequence_logprob(logps, mask)) == pytest.approx(-6)


def test_dense_dpo_gamma_one_equals_length_normalised_dpo():
    torch.manual_seed(0)
    lw, ll, rw, rl = (torch.randn(3, 6) for _ in range(4))
    mw = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0]], dtype=torch.bool)
    ml = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    changed = torch.rand(3, 6) > 0.5
    mean = lambda lp, m: (lp * m).sum(-1) / m.sum(-1)  # noqa: E731
    dense = dpo_loss(dense_logprob(lw, mw, changed, 1.0), dense_logprob(ll, ml, changed, 1.0),
                     dense_logprob(rw, mw, changed, 1.0), dense_logprob(rl, ml, changed, 1.0), 0.5)[0]
    normalised = dpo_loss(mean(lw, mw), mean(ll, ml), mean(rw, mw), mean(rl, ml), 0.5)[0]
    assert torch.allclose(dense, normalised)


def test_dpo_loss_equals_trls_sigmoid_loss():
    """trl 0.23.1's DPOTrainer.dpo_loss on the same log-probs (its module import needs a flag fixed: see below)."""
    pytest.importorskip("trl")
    import types

    import trl.import_utils as iu
    # trl 0.23.1 stores transformers 5's `_is_package_available` result, a tuple such as (False, None), which is
    # truthy, and then imports optional packages that are absent (mergekit, llm_blender); keep the booleans only.
    for name in dir(iu):
        value = getattr(iu, name)
        if name.startswith("_") and name.endswith("_available") and isinstance(value, tuple):
            setattr(iu, name, bool(value[0]))
    try:
        from trl.trainer.dpo_trainer import DPOTrainer
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"trl's DPOTrainer does not import here: {exc}")
    fake = types.SimpleNamespace(accelerator=types.SimpleNamespace(device=torch.device("cpu")), reference_free=False,
                                 f_divergence_type="reverse_kl", f_divergence_params=None, beta=0.5,
                                 label_smoothing=0.0, loss_type="sigmoid")
    torch.manual_seed(1)
    pw, pl, rw, rl = (torch.randn(16) * 3 for _ in range(4))
    theirs, t_w, t_l = DPOTrainer.dpo_loss(fake, pw, pl, rw, rl, loss_type="sigmoid")
    ours, o_w, o_l = dpo_loss(pw, pl, rw, rl, beta=0.5)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert torch.allclose(o_w, t_w) and torch.allclose(o_l, t_l)


def test_token_logprobs_ignore_padding():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]]]))
    lp = token_logprobs(logits, torch.tensor([[0, -100]]))
    assert lp[0, 0] == pytest.approx(math.log(0.5)) and lp[0, 1] == 0


# ------------------------------------------------------------------ configs and bad input

@pytest.mark.parametrize("kw, msg", [({"gamma": 0.5}, "gamma must be >= 1"), ({"beta": 0.0}, "beta must be > 0"),
                                     ({"method": "ppo"}, "method must be one of"), ({"steps": 0}, "steps"),
                                     ({"sft_weight": -1.0}, "sft_weight must be >= 0")])
def test_config_rejects_bad_values(kw, msg):
    with pytest.raises(ValueError, match=msg):
        PreferenceConfig(**kw)


def test_identical_pair_is_refused():
    with pytest.raises(ValueError, match="identical"):
        PreferencePair(torch.zeros(3, 8, 8), "one red circle", "one red circle")


def test_unchanged_corrections_are_skipped():
    same = make_correction("a", "x", "one red circle on a gray background", "one red circle on a gray background")
    diff = make_correction("a", "y", "one red circle on a gray background", "one red square on a gray background")
    pairs = pairs_from_corrections([same, diff], torch.zeros(2, 3, 8, 8))
    assert [p.item_id for p in pairs] == ["y"] and pairs[0].rejected_spans == ((8, 14),)


def test_too_long_caption_fails_before_training(captioner):
    long = " ".join(["red"] * 40)
    pair = PreferencePair(torch.zeros(3, 64, 64), long, "one red circle on a gray background")
    with pytest.raises(ValueError, match="maximum of 20 tokens"):
        preference_finetune(captioner, [pair], PreferenceConfig(steps=1, device="cpu"), progress=False)


# ------------------------------------------------------------------ encoding and training

def test_changed_tokens_follow_the_spans(captioner):
    c = make_correction("a", "i", "three red squares on a beige background", "a red square and a blue circle on a beige background")
    enc = encode_responses(captioner.tokenizer, [c.corrected], [c.corrected_char_spans])
    words = c.corrected.split(" ")
    marked = [w for w, m in zip(words, enc.changed[0, :len(words)].tolist()) if m]
    changed_words = [w for s, e in c.corrected_spans for w in words[s:e]]
    assert marked == changed_words and not enc.changed[0, len(words):].any()  # EOS and padding never changed


def test_loss_is_log2_at_start_and_one_step_lowers_it(captioner):
    pairs = _pairs(8)
    for method in ("dpo", "dense-dpo"):
        cfg = PreferenceConfig(method=method, steps=1, batch_size=8, learning_rate=1e-3, device="cpu")
        ref = reference_logprobs(captioner, pairs, cfg)
        loss0, _ = preference_loss(captioner.model.eval(), captioner, pairs, cfg, ref)
        assert float(loss0) == pytest.approx(math.log(2), abs=1e-5)
        res = preference_finetune(captioner, pairs, cfg, progress=False)
        loss1, stats = preference_loss(res.captioner.model, res.captioner, pairs, cfg, ref)
        assert float(loss1) < float(loss0) and stats["reward_margin"] > 0
    cfg = PreferenceConfig(method="sft", steps=1, batch_size=8, learning_rate=1e-3, device="cpu")
    before, _ = preference_loss(captioner.model.eval(), captioner, pairs, cfg)
    res = preference_finetune(captioner, pairs, cfg, progress=False)
    after, _ = preference_loss(res.captioner.model, res.captioner, pairs, cfg)
    assert float(after) < float(before)


def test_sft_weight_adds_the_chosen_nll_which_is_the_sft_loss(captioner):
    """DPO + α·NLL(y_w) (RPO): the loss is the plain DPO loss plus α times the SFT method's loss on the same pairs."""
    pairs, model = _pairs(8), captioner.model.eval()
    plain = PreferenceConfig(method="dense-dpo", batch_size=8, device="cpu")
    ref = reference_logprobs(captioner, pairs, plain)
    dpo, stats = preference_loss(model, captioner, pairs, plain, ref)
    rpo, _ = preference_loss(model, captioner, pairs, PreferenceConfig(method="dense-dpo", sft_weight=0.5, device="cpu"), ref)
    sft, _ = preference_loss(model, captioner, pairs, PreferenceConfig(method="sft", device="cpu"))
    assert float(sft) > 0 and stats["chosen_nll"] == pytest.approx(float(sft), rel=1e-6)
    assert float(rpo) == pytest.approx(float(dpo) + 0.5 * float(sft), rel=1e-6)


def test_training_copies_the_model_and_is_seeded(captioner):
    pairs = _pairs(8)
    before = {k: v.clone() for k, v in captioner.model.state_dict().items()}
    cfg = PreferenceConfig(method="dense-dpo", steps=3, batch_size=4, log_every=1, device="cpu", seed=3)
    a = preference_finetune(captioner, pairs, cfg, progress=False)
    b = preference_finetune(captioner, pairs, cfg, progress=False)
    assert all(torch.equal(before[k], v) for k, v in captioner.model.state_dict().items())
    assert [r["loss"] for r in a.history] == [r["loss"] for r in b.history] and len(a.history) == 3


# ------------------------------------------------------------------ the oracle's caption check

def test_check_caption_claims():
    _, scene = world.render(world.parse("a red circle to the left of a blue square"), size=64, seed=0)
    ok = world.check_caption("a red circle to the left of a blue square", scene)
    assert not ok.hallucinated and ok.covered == 2 and ok.mentions == 2
    flipped = world.check_caption("a red circle to the right of a blue square", scene)
    assert flipped.relation_wrong and flipped.hallucinated and flipped.hallucinated_mentions == 0
    fewer = world.check_caption("one red circle on a gray background", scene)
    assert fewer.covered == 1 and fewer.hallucinated_mentions == 0 and fewer.count_wrong
    extra = world.check_caption("a red circle and a green triangle on a gray background", scene)
    assert extra.hallucinated_mentions == 1 and extra.object_hallucinated
    assert not world.check_caption("not world text", scene).parsed


def test_select_by_returns_the_best_checkpoint(captioner):
    pairs = _pairs(8)
    calls = iter([0.5, 0.7, 0.2, 0.9])  # step 0, 1, 2, 3: the best is step 2
    cfg = PreferenceConfig(method="dpo", steps=3, batch_size=4, log_every=1, learning_rate=1e-3, device="cpu")
    states = {}

    def score(cap):
        states[len(states)] = {k: v.clone() for k, v in cap.model.state_dict().items()}
        return next(calls)

    res = preference_finetune(captioner, pairs, cfg, progress=False, select_by=score)
    assert res.selected_step == 2 and [r["step"] for r in res.history] == [0, 1, 2, 3]
    assert all(torch.equal(states[2][k], v) for k, v in res.captioner.model.state_dict().items())


# ------------------------------------------------------------------ mDPO's conditional and anchor terms

def test_conditional_negative_is_a_seeded_small_crop_resized_back():
    from feedbacklab.finetune.preference import conditional_negative

    h = w = 64
    ys, xs = torch.meshgrid(torch.arange(h) / (h - 1), torch.arange(w) / (w - 1), indexing="ij")
    image = torch.stack([xs, ys, torch.zeros_like(xs)])  # each pixel holds its own coordinates
    for seed in range(20):
        crop = conditional_negative(image, seed, keep=(0.04, 0.2))
        assert crop.shape == image.shape and torch.equal(crop, conditional_negative(image, seed, keep=(0.04, 0.2)))
        width = float(crop[0].max() - crop[0].min()) * (w - 1) + 1   # the source window the crop came from, in pixels
        height = float(crop[1].max() - crop[1].min()) * (h - 1) + 1
        assert 0.02 <= width * height / (h * w) <= 0.25
    assert not torch.equal(conditional_negative(image, 0), conditional_negative(image, 1))


def test_conditional_and_anchor_terms_are_log2_each_at_start_and_training_lowers_them(captioner):
    pairs, model = _pairs(8), captioner.model.eval()
    cfg = PreferenceConfig(method="dense-dpo", conditional_weight=1.0, anchor_weight=0.5, steps=3, batch_size=8,
                           learning_rate=1e-3, device="cpu")
    ref = reference_logprobs(captioner, pairs, cfg)
    assert len(ref) == 3 and not torch.allclose(ref[0], ref[2])  # y_w on the true image vs on its crop
    loss, stats = preference_loss(model, captioner, pairs, cfg, ref)
    assert float(loss) == pytest.approx((1 + 1.0 + 0.5) * math.log(2), abs=1e-5)
    assert stats["conditional_loss"] == pytest.approx(math.log(2), abs=1e-5)
    res = preference_finetune(captioner, pairs, cfg, progress=False)
    _, after = preference_loss(res.captioner.model, res.captioner, pairs, cfg, ref)
    assert after["conditional_loss"] < math.log(2) and after["crop_reward"] < after["chosen_reward"]


@pytest.mark.parametrize("kw, msg", [({"conditional_weight": -1.0}, "conditional_weight must be >= 0"),
                                     ({"method": "sft", "anchor_weight": 1.0}, "not of 'sft'"),
                                     ({"crop_keep": (0.3, 0.2)}, "crop_keep")])
def test_mdpo_terms_reject_bad_values(kw, msg):
    with pytest.raises(ValueError, match=msg):
        PreferenceConfig(**kw)


# ------------------------------------------------------------------ a decoder-only VLM (tiny LLaVA from a config)

def _tiny_llava():
    """A LlavaForConditionalGeneration (CLIP vision tower → Llama) from small configs, its word-level tokenizer with an
    ``<image>`` token, and the question of 16 image tokens its 64 px / 16 px patches fill."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import (CLIPImageProcessor, CLIPVisionConfig, LlamaConfig, LlavaConfig,
                              LlavaForConditionalGeneration, PreTrainedTokenizerFast)

    from feedbacklab.models.captioner import SPECIAL, LoadedCaptioner, world_vocabulary

    vocab = {w: i for i, w in enumerate(world_vocabulary() + ["<image>"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL["unk"]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single=f"$A {SPECIAL['eos']}",
                                                       special_tokens=[(SPECIAL["eos"], vocab[SPECIAL["eos"]])])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=SPECIAL["pad"], bos_token=SPECIAL["bos"],
                                        eos_token=SPECIAL["eos"], unk_token=SPECIAL["unk"], model_max_length=64)
    tokenizer.add_tokens(["<image>"], special_tokens=True)  # split out wherever it stands, as real VLM tokenizers do
    assert tokenizer.convert_tokens_to_ids("<image>") == vocab["<image>"]
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=64, patch_size=16, hidden_size=32, intermediate_size=64,
                                       num_hidden_layers=2, num_attention_heads=2),
        text_config=LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                                pad_token_id=vocab[SPECIAL["pad"]]),
        image_token_index=vocab["<image>"], vision_feature_layer=-1)
    model = LlavaForConditionalGeneration(config).eval()
    processor = CLIPImageProcessor(size={"shortest_edge": 64}, crop_size={"height": 64, "width": 64})
    return LoadedCaptioner(model=model, tokenizer=tokenizer, processor=processor), "<image> " * 16


def test_decoder_only_vlm_scores_only_the_response_and_trains():
    from dataclasses import replace

    from feedbacklab.finetune.preference import _scores

    vlm, question = _tiny_llava()
    pairs = [replace(p, question=question) for p in _pairs(4)]
    cfg = PreferenceConfig(method="dense-dpo", steps=2, batch_size=4, learning_rate=1e-3, device="cpu")
    logps, mask, changed = _scores(vlm.model, vlm, pairs, "chosen", cfg)
    n_response = [len(vlm.tokenizer(p.chosen).input_ids) for p in pairs]   # the words and EOS
    assert mask.sum(1).tolist() == n_response and bool((changed <= mask).all()) and changed.any()
    # independently: the model's own next-token log-probabilities of the response tokens after the question
    with torch.no_grad():
        for b, p in enumerate(pairs):
            ids = vlm.tokenizer(question + p.chosen, return_tensors="pt").input_ids
            logits = vlm.model(input_ids=ids, pixel_values=vlm.pixel_values(p.image[None])).logits[0, :-1]
            own = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[-n_response[b]:, 0]
            torch.testing.assert_close(logps[b][mask[b]], own, atol=1e-5, rtol=1e-5)
    ref = reference_logprobs(vlm, pairs, cfg)
    loss0, _ = preference_loss(vlm.model, vlm, pairs, cfg, ref)
    assert float(loss0) == pytest.approx(math.log(2), abs=1e-5)
    res = preference_finetune(vlm, pairs, cfg, progress=False)
    loss1, stats = preference_loss(res.captioner.model, res.captioner, pairs, cfg, ref)
    assert float(loss1) < float(loss0) and stats["reward_margin"] > 0


def test_load_captioner_reads_a_decoder_only_vlm_and_it_captions_and_trains(tmp_path):
    from dataclasses import replace

    from transformers import LlavaProcessor

    from feedbacklab.models import load_captioner
    from feedbacklab.models.vlm import LoadedVLM

    tiny, _ = _tiny_llava()
    processor = LlavaProcessor(image_processor=tiny.processor, tokenizer=tiny.tokenizer, patch_size=16,
                               vision_feature_select_strategy="default", num_additional_image_tokens=1,
                               image_token="<image>")
    LoadedVLM(tiny.model, tiny.tokenizer, processor, prompt="<image> one").save(tmp_path / "vlm")
    vlm = load_captioner(tmp_path / "vlm", device="cpu", prompt="<image> one")
    assert isinstance(vlm, LoadedVLM) and vlm.question.split().count("<image>") == 16 and vlm.image_size == 64
    images = torch.stack([p.image for p in _pairs(3)])
    captions = vlm.caption(images, max_new_tokens=4)
    assert len(captions) == 3 and all(isinstance(c, str) for c in captions)
    with torch.no_grad():  # the reloaded weights are the saved ones
        ids = vlm.tokenizer(vlm.question, return_tensors="pt").input_ids
        pix = vlm.pixel_values(images[:1])
        torch.testing.assert_close(vlm.model(input_ids=ids, pixel_values=pix).logits,
                                   tiny.model(input_ids=ids, pixel_values=pix).logits)
    pairs = [replace(p, question=vlm.question) for p in _pairs(4)]
    res = preference_finetune(vlm, pairs, PreferenceConfig(method="dpo", steps=1, batch_size=4, device="cpu"),
                              progress=False)
    assert res.history and math.isfinite(res.history[-1]["loss"])
    with pytest.raises(ValueError, match="image placeholder"):
        LoadedVLM(tiny.model, tiny.tokenizer, processor, prompt="no placeholder")


def test_sft_examples_train_sft_as_the_chosen_side_of_pairs(captioner):
    """SFT on (image, response) examples is the SFT method on pairs with those chosen responses; DPO refuses them."""
    pairs = _pairs(4)
    examples = sft_examples(torch.stack([p.image for p in pairs]), [p.chosen for p in pairs], item_ids=["a", "b", "c", "d"])
    assert [e.rejected for e in examples] == [None] * 4 and [e.item_id for e in examples] == ["a", "b", "c", "d"]
    cfg = PreferenceConfig(method="sft", device="cpu")
    on_examples, _ = preference_loss(captioner.model.eval(), captioner, examples, cfg)
    on_pairs, _ = preference_loss(captioner.model, captioner, pairs, cfg)
    assert float(on_examples) == pytest.approx(float(on_pairs), rel=1e-6)
    train = PreferenceConfig(method="sft", steps=2, batch_size=4, log_every=1, device="cpu", seed=1)
    a = preference_finetune(captioner, examples, train, progress=False)
    b = preference_finetune(captioner, pairs, train, progress=False)
    assert [r["loss"] for r in a.history] == pytest.approx([r["loss"] for r in b.history], rel=1e-6)
    with pytest.raises(ValueError, match=r"4 of 4 examples have no rejected response .* method 'dpo' needs a pair"):
        preference_finetune(captioner, examples, PreferenceConfig(method="dpo", device="cpu"), progress=False)
    with pytest.raises(ValueError, match="one image per response, got 4 images and 3 responses"):
        sft_examples(torch.stack([p.image for p in pairs]), ["x"] * 3)
    with pytest.raises(ValueError, match="rejected_spans given without a rejected response"):
        PreferencePair(pairs[0].image, "a caption", None, rejected_spans=((0, 1),))


def test_sft_examples_train_a_decoder_only_vlm_on_its_response_only():
    """The clean-caption SFT of notebook 50 on a decoder-only VLM: the loss is the response tokens' NLL
    after the question, and steps lower it."""
    from feedbacklab.finetune.preference import _scores

    vlm, question = _tiny_llava()
    pairs = _pairs(4)
    examples = sft_examples(torch.stack([p.image for p in pairs]), [p.chosen for p in pairs], question=question)
    cfg = PreferenceConfig(method="sft", steps=6, batch_size=4, log_every=1, learning_rate=1e-3, device="cpu")
    loss, _ = preference_loss(vlm.model.eval(), vlm, examples, cfg)
    lp, mask, _ = _scores(vlm.model, vlm, examples, "chosen", cfg)
    assert mask.sum(1).tolist() == [len(vlm.tokenizer(p.chosen).input_ids) for p in pairs]  # words + EOS, no question
    assert float(loss) == pytest.approx(-float(lp.sum() / mask.sum()), rel=1e-6)
    res = preference_finetune(vlm, examples, cfg, progress=False)
    assert res.history[-1]["loss"] < res.history[0]["loss"]
