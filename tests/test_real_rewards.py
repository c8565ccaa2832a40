"""PickScore, HPSv2 and BLIP-2 ITM: tiny models of the real classes, saved the standard way, scored against
formulas computed by hand on the same weights; hub defaults fail offline with a clear error."""
import argparse
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from feedbacklab.models.registry import ModelNotAvailableError
from feedbacklab.rewards import Blip2ITM, HPSv2, PickScore, list_rewards, load_reward

torch.set_num_threads(1)
PROMPTS = ["one red circle on a white background", "two blue squares", "a red square on black"]
OPENAI_MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
OPENAI_STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
TINY_VISION = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2, image_size=32,
                   patch_size=8)


def images(n=3, h=32, w=32, seed=0):
    return torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(seed))


@pytest.fixture()
def offline(monkeypatch):
    """No network: huggingface_hub reads HF_HUB_OFFLINE at import, so patch its constant too."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


# ---------------------------------------------------------------- PickScore

@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    """A tiny transformers CLIPModel + CLIPProcessor (the CLIP BPE tokenizer, 32 px) saved with save_pretrained."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    from feedbacklab.models.tokenizer import BOS_ID, CLIP_VOCAB_SIZE, EOS_ID, build_clip_tokenizer

    torch.manual_seed(0)
    text = dict(vocab_size=CLIP_VOCAB_SIZE, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                num_attention_heads=2, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=EOS_ID)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=TINY_VISION, projection_dim=16)).eval()
    processor = CLIPProcessor(image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size=32),
                              tokenizer=build_clip_tokenizer(77))
    path = tmp_path_factory.mktemp("tiny-pickscore")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path, model, processor


def test_real_rewards_are_registered():
    assert {"PickScore_v1", "HPSv2.1", "HPSv2", "blip2-itm"} <= set(list_rewards())


def test_pickscore_is_logit_scale_times_cosine(tiny_clip):
    path, model, processor = tiny_clip
    reward = load_reward("PickScore_v1", model=str(path), device="cpu")
    assert isinstance(reward, PickScore)
    x = images()
    with torch.no_grad():  # 32 px input: the processor's resize and crop are the identity
        img = model.get_image_features(pixel_values=(x - OPENAI_MEAN) / OPENAI_STD).pooler_output
        tok = processor.tokenizer(PROMPTS, padding=True, return_tensors="pt")
        txt = model.get_text_features(**tok).pooler_output
        want = model.logit_scale.exp() * F.cosine_similarity(img, txt)
    got = reward.score(PROMPTS, x)
    assert got.shape == (3,) and torch.allclose(got, want, atol=1e-5)
    assert torch.equal(reward.score(PROMPTS, x), got)
    assert reward.score(PROMPTS[0], x[:2]).shape == (2,)


def test_pickscore_resizes_like_the_processor_on_pil_images(tiny_clip):
    """Non-square float tensors (no ×255 rescale) match the processor's own path on uint8 PIL images."""
    from PIL import Image

    path, model, processor = tiny_clip
    reward = load_reward("PickScore_v1", model=str(path), device="cpu")
    x = F.interpolate(images(2, 12, 10), size=(48, 40), mode="nearest")  # blocky: resampling differences stay small
    pil = [Image.fromarray((im.permute(1, 2, 0) * 255).round().byte().numpy()) for im in x]
    with torch.no_grad():
        img = model.get_image_features(**processor.image_processor(images=pil, return_tensors="pt")).pooler_output
        txt = model.get_text_features(**processor.tokenizer(PROMPTS[:2], padding=True, return_tensors="pt")).pooler_output
        want = model.logit_scale.exp() * F.cosine_similarity(img, txt)
    assert torch.allclose(reward.score(PROMPTS[:2], x), want, atol=0.05)


def test_pickscore_processor_defaults_and_offline_errors(tiny_clip, tmp_path, offline):
    path, model, _ = tiny_clip
    model.save_pretrained(tmp_path)  # weights only: the processor defaults to the hub's CLIP-H processor
    with pytest.raises(ModelNotAvailableError, match="laion/CLIP-ViT-H-14-laion2B-s32B-b79K.*network"):
        load_reward("PickScore_v1", model=str(tmp_path), device="cpu")
    assert load_reward("PickScore_v1", model=str(tmp_path), processor=str(path), device="cpu").score(
        PROMPTS, images()).shape == (3,)
    with pytest.raises(ModelNotAvailableError, match="PickScore_v1.*yuvalkirstain/PickScore_v1.*model=<directory"):
        load_reward("PickScore_v1")


def test_pickscore_refuses_other_models_and_incomplete_weights(tiny_clip, tiny_blip, tmp_path):
    from safetensors.torch import load_file, save_file

    with pytest.raises(ValueError, match="'PickScore_v1' expects a transformers CLIPModel.*'blip-2'"):
        load_reward("PickScore_v1", model=str(tiny_blip[0]), device="cpu")
    with pytest.raises(ValueError, match="no config.json"):
        load_reward("PickScore_v1", model=str(tmp_path), device="cpu")
    shutil.copytree(tiny_clip[0], tmp_path / "clip")
    weights = load_file(tmp_path / "clip" / "model.safetensors")
    del weights["logit_scale"]
    save_file(weights, tmp_path / "clip" / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match="lacks weights for.*logit_scale"):
        load_reward("PickScore_v1", model=str(tmp_path / "clip"), device="cpu")


# ---------------------------------------------------------------- HPSv2

@pytest.fixture(scope="module")
def tiny_hps(tmp_path_factory):
    """A tiny OpenCLIP (the shapes-clip architecture, 64 px) and its state dict in HPS's layout, from DDP."""
    import open_clip

    from feedbacklab.models.clip import register_config

    arch = register_config()
    torch.manual_seed(0)
    model = open_clip.create_model_and_transforms(arch, pretrained=None)[0].eval()
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("tiny-hps") / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": state}, path)
    return path, model, arch


def test_hpsv2_is_the_cosine_of_normalised_features(tiny_hps):
    import open_clip

    path, model, arch = tiny_hps
    reward = load_reward("HPSv2.1", arch=arch, checkpoint=str(path), device="cpu")
    assert isinstance(reward, HPSv2) and reward.name == "HPSv2.1"
    x = images(h=64, w=64)
    with torch.no_grad():  # 64 px input: the preprocessing is only the normalisation
        img = model.encode_image((x - OPENAI_MEAN) / OPENAI_STD)
        txt = model.encode_text(open_clip.get_tokenizer(arch)(PROMPTS))
        want = F.cosine_similarity(img, txt)
    got = reward.score(PROMPTS, x)
    assert got.shape == (3,) and torch.allclose(got, want, atol=1e-5)
    assert torch.equal(reward.score(PROMPTS, x), got)


def test_hpsv2_loads_safetensors_and_pads_the_short_side_like_hps(tiny_hps, tmp_path):
    from safetensors.torch import save_file

    path, model, arch = tiny_hps
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "hps.safetensors")
    reward = load_reward("HPSv2", arch=arch, checkpoint=str(tmp_path / "hps.safetensors"), device="cpu")
    assert reward.name == "HPSv2"
    wide = images(2, 32, 64)
    padded = F.pad(wide, (0, 0, 16, 16))  # hpsv2's preprocess_val: longest side to 64, black padding
    assert torch.allclose(reward.score(PROMPTS[:2], wide), reward.score(PROMPTS[:2], padded), atol=1e-5)


def test_hpsv2_checkpoint_errors(tiny_hps, tmp_path):
    path, model, arch = tiny_hps
    state = torch.load(path, weights_only=True)["state_dict"]
    missing = {k: v for k, v in state.items() if k != "module.visual.proj"}
    torch.save({"state_dict": {**missing, "score_head.weight": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"'HPSv2.1'.*'shapes-clip'.*\['visual.proj'\].*\['score_head.weight'\]"):
        load_reward("HPSv2.1", arch=arch, checkpoint=str(tmp_path / "other.pt"), device="cpu")
    torch.save({"state_dict": state, "args": argparse.Namespace(lr=1.0)}, tmp_path / "pickled.pt")
    with pytest.raises(ValueError, match="tensors-only"):
        load_reward("HPSv2.1", arch=arch, checkpoint=str(tmp_path / "pickled.pt"), device="cpu")
    with pytest.raises(FileNotFoundError, match="no-such.pt"):
        load_reward("HPSv2.1", arch=arch, checkpoint=str(tmp_path / "no-such.pt"), device="cpu")


@pytest.mark.parametrize("name, file", [("HPSv2.1", "HPS_v2.1_compressed.pt"), ("HPSv2", "HPS_v2_compressed.pt")])
def test_hpsv2_hub_checkpoint_fails_offline(name, file, offline):
    with pytest.raises(ModelNotAvailableError, match=f"'{name}'.*'{file}'.*'xswu/HPSv2'.*checkpoint=<path"):
        load_reward(name)


# ---------------------------------------------------------------- BLIP-2 ITM

@pytest.fixture(scope="module")
def tiny_blip(tmp_path_factory):
    """A tiny Blip2ForImageTextRetrieval + Blip2Processor (a 15-word BERT vocabulary, 32 px) saved with save_pretrained."""
    from transformers import (BertTokenizer, Blip2Config, Blip2ForImageTextRetrieval, Blip2Processor,
                              BlipImageProcessor)

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "one", "two", "a", "red", "blue", "circle", "square", "##s",
             "on", "white"]
    qformer = dict(vocab_size=len(words), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                   num_attention_heads=2, encoder_hidden_size=32, max_position_embeddings=64,
                   use_qformer_text_input=True)
    text = dict(model_type="opt", vocab_size=50, hidden_size=16, ffn_dim=16, num_hidden_layers=1,
                num_attention_heads=2, word_embed_proj_dim=16)  # unused by the retrieval model
    torch.manual_seed(0)
    config = Blip2Config(vision_config=TINY_VISION, qformer_config=qformer, text_config=text, num_query_tokens=4,
                         image_text_hidden_size=16)
    model = Blip2ForImageTextRetrieval(config).eval()
    processor = Blip2Processor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                               tokenizer=BertTokenizer(vocab={w: i for i, w in enumerate(words)}))
    path = tmp_path_factory.mktemp("tiny-blip2")
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path, model, processor


def test_blip2_itm_is_the_match_probability(tiny_blip):
    path, model, processor = tiny_blip
    reward = load_reward("blip2-itm", model=str(path), device="cpu")
    assert isinstance(reward, Blip2ITM) and reward.mode == "itm"
    x = images()
    tok = processor.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():  # 32 px input: the processor's resize is the identity
        logits = model(pixel_values=(x - OPENAI_MEAN) / OPENAI_STD, **tok, use_image_text_matching_head=True)
    got = reward.score(PROMPTS, x)
    assert got.shape == (3,) and ((got >= 0) & (got <= 1)).all()
    assert torch.allclose(got, logits.logits_per_image.softmax(-1)[:, 1], atol=1e-5)
    assert torch.equal(reward.score(PROMPTS, x), got)


def test_blip2_itc_is_the_best_query_cosine(tiny_blip):
    path, model, processor = tiny_blip
    reward = load_reward("blip2-itm", model=str(path), device="cpu", mode="itc")
    x = images()
    tok = processor.tokenizer(PROMPTS, padding=True, return_tensors="pt")
    with torch.no_grad():  # Q-Former queries over the image vs the Q-Former's [CLS] of the text, per pair
        patches = model.vision_model(pixel_values=(x - OPENAI_MEAN) / OPENAI_STD).last_hidden_state
        queries = model.qformer(query_embeds=model.query_tokens.expand(3, -1, -1), encoder_hidden_states=patches,
                                encoder_attention_mask=torch.ones(patches.shape[:2], dtype=torch.long))
        cls = model.qformer(query_embeds=model.embeddings(input_ids=tok["input_ids"]), query_length=0,
                            attention_mask=tok["attention_mask"]).last_hidden_state[:, 0]
        q = F.normalize(model.vision_projection(queries.last_hidden_state), dim=-1)  # (B, Q, D)
        t = F.normalize(model.text_projection(cls), dim=-1)  # (B, D)
        want = (q * t[:, None]).sum(-1).amax(1)
    got = reward.score(PROMPTS, x)
    assert got.shape == (3,) and torch.allclose(got, want, atol=1e-5) and got.abs().max() <= 1 + 1e-6


def test_blip2_errors(tiny_blip, tiny_clip, tmp_path, offline):
    with pytest.raises(ValueError, match="unknown mode 'vqa'.*'itm', 'itc'"):
        load_reward("blip2-itm", model=str(tiny_blip[0]), mode="vqa")
    with pytest.raises(ValueError, match="'blip2-itm' expects a transformers Blip2ForImageTextRetrieval.*'clip'"):
        load_reward("blip2-itm", model=str(tiny_clip[0]), device="cpu")
    config = json.loads((tiny_blip[0] / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["Blip2ForConditionalGeneration"]}))
    with pytest.raises(ValueError, match="architectures \\['Blip2ForConditionalGeneration'\\]"):
        load_reward("blip2-itm", model=str(tmp_path), device="cpu")
    with pytest.raises(ModelNotAvailableError, match="'blip2-itm'.*'Salesforce/blip2-itm-vit-g'.*network"):
        load_reward("blip2-itm")
