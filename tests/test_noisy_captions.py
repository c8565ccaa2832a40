"""Miscounted captions (the web-caption premise of Lee et al. 2023) and continued training on them."""
import pytest

from feedbacklab import world
from feedbacklab.models import data as wdata
from feedbacklab.models.noisy_captions import miscount_captions, pretrain_noisy_captions


def test_only_attribute_counts_change_at_the_given_rate():
    specs = wdata.sample_specs(3000, seed=3)
    prompts = miscount_captions(specs, 0.5, seed=1)
    attribute = [i for i, s in enumerate(specs) if s.family == "attribute"]
    changed = [i for i, (p, s) in enumerate(zip(prompts, specs)) if p != world.prompt(s)]
    assert set(changed) <= set(attribute)
    assert len(changed) / len(attribute) == pytest.approx(0.5, abs=0.04)
    for i in changed:  # the count, and only the count, is wrong
        got, true = world.parse(prompts[i]), specs[i]
        assert got.count != true.count and got.objects[0] == true.objects[0] and got.background == true.background
    assert miscount_captions(specs, 0.5, seed=1) == prompts
    assert miscount_captions(specs, 0.0) == [world.prompt(s) for s in specs]


def test_bad_inputs_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="probability"):
        miscount_captions([], 1.5)
    (tmp_path / "kept.txt").write_text("saved work")
    with pytest.raises(FileExistsError, match="not empty"):
        pretrain_noisy_captions(tmp_path, wrong_count=0.5)
    assert (tmp_path / "kept.txt").read_text() == "saved work"
    with pytest.raises(ValueError, match="probability"):
        pretrain_noisy_captions(tmp_path / "new", wrong_count=2.0)


def test_continued_training_writes_a_loadable_pipeline_and_card(tmp_path):
    import json

    import torch

    from feedbacklab.models import load_generator
    from feedbacklab.models.generator import GeneratorConfig, build_pipeline

    torch.manual_seed(0)
    base = tmp_path / "base"
    build_pipeline(GeneratorConfig.tiny()).save_pretrained(base)
    section = pretrain_noisy_captions(tmp_path / "noisy", base, wrong_count=1.0, steps=2, n_images=8, batch_size=4)
    card = json.loads((tmp_path / "noisy" / "card.json").read_text())
    assert card["noisy_caption_training"]["steps"] == section["steps"] == 2
    assert 0 < section["share_of_captions_wrong"] <= 1
    before, after = load_generator(base, device="cpu"), load_generator(tmp_path / "noisy", device="cpu")
    assert any(not torch.equal(a, b) for a, b in zip(before.unet.state_dict().values(), after.unet.state_dict().values()))


def test_half_precision_storage_loads_as_float32_on_cpu(tmp_path):
    import torch
    from safetensors.torch import load_file

    from feedbacklab.models import load_generator
    from feedbacklab.models.generator import GeneratorConfig, build_pipeline

    torch.manual_seed(0)
    base = tmp_path / "base"
    build_pipeline(GeneratorConfig.tiny()).save_pretrained(base)
    pretrain_noisy_captions(tmp_path / "noisy", base, wrong_count=0.5, steps=1, n_images=8, batch_size=4)
    stored = load_file(next((tmp_path / "noisy" / "unet").glob("*.safetensors")))
    assert {t.dtype for t in stored.values()} == {torch.float16}
    pipe = load_generator(tmp_path / "noisy", device="cpu")
    assert pipe.unet.dtype == pipe.text_encoder.dtype == pipe.vae.dtype == torch.float32
    with pytest.raises(ValueError, match="stored_dtype"):
        pretrain_noisy_captions(tmp_path / "other", base, stored_dtype="int8")
