"""Feedback sets: generation, oracle records, annotator labels, caching and determinism."""
import numpy as np
import pytest
import torch

from feedbacklab import feedback_sets as fs
from feedbacklab.feedback.annotators import make_panel
from feedbacklab.feedback_sets import (FeedbackSet, SamplerConfig, generate_feedback_set, generator_fingerprint,
                                       image_seed, load_feedback_set, sample_images, split_indices)

torch.set_num_threads(1)
PROMPTS = ["two red circles on a white background", "one blue square on a black background"]
FAST = SamplerConfig(num_inference_steps=2, guidance_scale=2.0)


@pytest.fixture(scope="module")
def pipe():
    from feedbacklab.models.generator import GeneratorConfig, build_pipeline

    torch.manual_seed(0)
    return build_pipeline(GeneratorConfig.tiny())


@pytest.fixture(scope="module")
def panel():
    return make_panel(3, noise={"flip_prob": 0.3}, seed=0)


def test_records_hold_oracle_truth_and_majority_labels(pipe, panel):
    from feedbacklab import world

    s = generate_feedback_set(pipe, PROMPTS, 2, panel, seed=0, sampler=FAST, batch_size=3, progress=False)
    assert len(s) == 4 and s.images.shape == (4, 32, 32, 3) and s.images.dtype == np.uint8
    assert s.prompts == [PROMPTS[0]] * 2 + [PROMPTS[1]] * 2
    for r, image in zip(s.records, s.images):
        j = world.judge(r["prompt"], image)
        assert r["aligned"] == j.aligned and r["attributes"] == j.attributes
        assert r["labels"] == [b.label for b in panel.binary(j, r["item_id"])]
        assert r["label"] == int(sum(r["labels"]) >= 2)
        assert r["seed"] == image_seed(0, r["prompt_index"], r["sample"])
    assert s.labels.tolist() == [r["label"] for r in s.records]
    assert s.tensors().shape == (4, 3, 32, 32)


def test_unlabelled_set_has_truth_but_no_labels(pipe):
    s = generate_feedback_set(pipe, PROMPTS[:1], 2, None, seed=0, sampler=FAST, progress=False)
    assert s.truth.shape == (2,) and all(r["labels"] is None for r in s.records)
    with pytest.raises(ValueError, match="no annotator labels"):
        s.labels


def test_same_inputs_same_set_and_batching_does_not_matter(pipe, panel):
    a = generate_feedback_set(pipe, PROMPTS, 2, panel, seed=1, sampler=FAST, batch_size=4, progress=False)
    b = generate_feedback_set(pipe, PROMPTS, 2, panel, seed=1, sampler=FAST, batch_size=4, progress=False)
    c = generate_feedback_set(pipe, PROMPTS, 2, panel, seed=1, sampler=FAST, batch_size=1, progress=False)
    assert np.array_equal(a.images, b.images) and a.records == b.records
    assert np.abs(a.images.astype(int) - c.images.astype(int)).max() <= 1
    d = generate_feedback_set(pipe, PROMPTS, 2, panel, seed=2, sampler=FAST, batch_size=4, progress=False)
    assert not np.array_equal(a.images, d.images)


def test_cache_is_reused_and_keyed_on_every_input(pipe, panel, tmp_path, monkeypatch):
    first = generate_feedback_set(pipe, PROMPTS, 2, panel, seed=0, sampler=FAST, cache_dir=tmp_path, progress=False)
    assert first.path.parent == tmp_path
    assert {p.name for p in first.path.iterdir()} == {"images.npy", "records.json", "meta.json"}

    def fail(*args, **kwargs):
        raise AssertionError("the cached set should have been reused")

    monkeypatch.setattr(fs, "sample_images", fail)
    again = generate_feedback_set(pipe, PROMPTS, 2, panel, seed=0, sampler=FAST, cache_dir=tmp_path, progress=False)
    assert again.path == first.path and np.array_equal(again.images, first.images) and again.records == first.records
    loaded = load_feedback_set(first.path)
    assert np.array_equal(loaded.images, first.images)
    monkeypatch.undo()

    variants = [dict(seed=1), dict(n_per_prompt=1), dict(prompts=PROMPTS[::-1]),
                dict(sampler=SamplerConfig(num_inference_steps=3, guidance_scale=2.0)),
                dict(panel=make_panel(3, noise={"flip_prob": 0.1}, seed=0)), dict(panel=None),
                dict(generator_id="another-generator")]
    paths = {first.path}
    for change in variants:
        kwargs = dict(prompts=PROMPTS, n_per_prompt=1 if "n_per_prompt" in change else 2, panel=panel, seed=0,
                      sampler=FAST)
        kwargs.update(change)
        with monkeypatch.context() as m:  # keep it fast: the key is computed before any sampling
            m.setattr(fs, "sample_images", lambda p, prompts, seeds, *a, **k: torch.zeros(len(prompts), 3, 32, 32))
            paths.add(generate_feedback_set(pipe, cache_dir=tmp_path, progress=False, **kwargs).path)
    assert len(paths) == len(variants) + 1


def test_fingerprint_follows_the_weights(pipe):
    before = generator_fingerprint(pipe)
    assert generator_fingerprint(pipe) == before
    with torch.no_grad():
        next(pipe.unet.parameters()).view(-1)[0] += 1.0
    try:
        assert generator_fingerprint(pipe) != before
    finally:
        with torch.no_grad():
            next(pipe.unet.parameters()).view(-1)[0] -= 1.0


def test_sample_images_validates_inputs(pipe):
    with pytest.raises(ValueError, match="one seed per prompt"):
        sample_images(pipe, PROMPTS, [1], FAST)
    with pytest.raises(ValueError, match="n_per_prompt"):
        generate_feedback_set(pipe, PROMPTS, 0)
    with pytest.raises(ValueError, match="prompts"):
        generate_feedback_set(pipe, [], 1)
    with pytest.raises(ValueError, match="num_inference_steps"):
        SamplerConfig(num_inference_steps=0)
    with pytest.raises(FileNotFoundError, match="not a feedback set"):
        load_feedback_set("/nonexistent/feedback-set")


def test_split_indices_partition_by_prompt_and_image():
    records = [{"prompt": f"p{i % 10}"} for i in range(100)]
    split = split_indices(records, heldout_prompt_fraction=0.2, val_fraction=0.25, seed=0)
    all_idx = np.concatenate([split["train"], split["val"], split["heldout_prompts"]])
    assert sorted(all_idx.tolist()) == list(range(100))
    held = {records[i]["prompt"] for i in split["heldout_prompts"]}
    assert len(held) == 2 and not held & {records[i]["prompt"] for i in np.concatenate([split["train"], split["val"]])}
    assert len(split["val"]) == 20 and len(split["train"]) == 60
    assert split_indices(records, 0.2, 0.25, seed=0)["val"].tolist() == split["val"].tolist()


def test_subset_keeps_images_and_records_aligned():
    images = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    s = FeedbackSet(images, [{"prompt": str(i), "aligned": i % 2} for i in range(4)])
    sub = s.subset([3, 1])
    assert sub.prompts == ["3", "1"] and np.array_equal(sub.images, images[[3, 1]]) and sub.truth.tolist() == [1, 1]
