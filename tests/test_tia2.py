"""TIA2 format: loader, writer, per-prompt evaluation and the ShapesWorld benchmark builder."""
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from feedbacklab.datasets import tia2 as T
from feedbacklab.feedback import NoiseConfig, make_panel

FIXTURE = Path(__file__).parent / "fixtures" / "tia2_small.json"
PROMPT_A = "two red circles on a blue background"
PROMPT_B = "a realistic photo of an airplane"
PROMPT_C = "a red circle and a blue square on a white background"


def test_load_fixture():
    records = T.load_tia2(FIXTURE)
    assert len(records) == 9
    first = records[0]
    assert (first.key, first.image, first.prompt, first.labels, first.majority) == (
        "image_0_0_0.jpg", "image_0_0_0.jpg", PROMPT_A, (1, 1, 1), 1)
    assert [r.majority for r in records] == [1, 1, 0, 0, 1, 1, 1, 0, 0]
    assert records[1].mean_label == pytest.approx(2 / 3)


def test_per_prompt_alignment_of_fixture():
    assert T.per_prompt_alignment(T.load_tia2(FIXTURE)) == {PROMPT_A: 0.5, PROMPT_B: 1.0, PROMPT_C: 0.0}


def test_write_then_load_round_trip(tmp_path):
    records = T.load_tia2(FIXTURE)
    path = T.write_tia2(records, tmp_path / "out" / "labels.json")
    assert T.load_tia2(path) == records
    assert json.loads(path.read_text()) == json.loads(FIXTURE.read_text())
    with pytest.raises(T.TIA2FormatError, match="duplicate entry 'image_0_0_0.jpg'"):
        T.write_tia2(records + records[:1], tmp_path / "dup.json")


def _malformed(tmp_path, edit):
    data = json.loads(FIXTURE.read_text())
    data = edit(data)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("edit, message", [
    (lambda d: list(d.values()), "JSON object keyed by image file name, got a JSON list"),
    (lambda d: {**d, "image_0_0_1.jpg": {"image": "image_0_0_1.jpg", "human_labels": [1, 1, 1]}},
     r"entry 'image_0_0_1.jpg': missing key\(s\) \['caption'\]"),
    (lambda d: {**d, "image_1_0_2.jpg": {**d["image_1_0_2.jpg"], "human_labels": [1, 0]}},
     "entry 'image_1_0_2.jpg': 'human_labels' must be a list of 3"),
    (lambda d: {**d, "image_2_0_0.jpg": {**d["image_2_0_0.jpg"], "human_labels": [1, 2, 0]}},
     "entry 'image_2_0_0.jpg': 'human_labels' must be 0 or 1"),
    (lambda d: {**d, "image_2_0_0.jpg": {**d["image_2_0_0.jpg"], "human_labels": [True, False, True]}},
     "entry 'image_2_0_0.jpg': 'human_labels' must be 0 or 1"),
    (lambda d: {**d, "image_0_0_3.jpg": {**d["image_0_0_3.jpg"], "caption": 7}},
     "entry 'image_0_0_3.jpg': 'caption' must be a non-empty string"),
    (lambda d: {**d, "image_0_0_2.jpg": [1, 1, 1]}, "entry 'image_0_0_2.jpg': expected an object"),
])
def test_malformed_files_name_the_entry(tmp_path, edit, message):
    with pytest.raises(T.TIA2FormatError, match=message):
        T.load_tia2(_malformed(tmp_path, edit))


def test_invalid_json_and_missing_file(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text('{"image_0.jpg": ')
    with pytest.raises(T.TIA2FormatError, match="not valid JSON"):
        T.load_tia2(bad)
    with pytest.raises(FileNotFoundError, match="nowhere.json"):
        T.load_tia2(tmp_path / "nowhere.json")


def test_evaluate_tia2_per_prompt_against_direct_computation():
    records = T.load_tia2(FIXTURE)
    scores = np.array([0.9, 0.2, 0.4, 0.1, 0.5, 0.7, 0.6, 0.8, 0.3])
    result = T.evaluate_tia2(records, scores, ks=(1, 2))
    # prompt A: majority (1, 1, 0, 0) with scores (.9, .2, .4, .1): pairs 1 + 1 + 0 + 1 of 4
    a = slice(0, 4)
    assert result["auroc"].per_group[PROMPT_A] == pytest.approx(roc_auc_score([1, 1, 0, 0], scores[a]))
    assert result["auroc"].per_group[PROMPT_A] == pytest.approx(0.75)
    # prompts B (all aligned) and C (none aligned) have a single class: AUROC undefined, skipped
    assert result["auroc"].n_undefined == 2 and result["auroc"].mean == pytest.approx(0.75)
    # AP@2 for A: ranking .9 (1), .4 (0) -> (1/1) / 1
    assert result["ap2"].per_group[PROMPT_A] == 1.0
    assert result["ap1"].per_group[PROMPT_C] == 0.0
    mean_a = [1, 2 / 3, 1 / 3, 0]
    assert result["spearman"].per_group[PROMPT_A] == pytest.approx(stats.spearmanr(scores[a], mean_a)[0])
    assert result["kendall"].per_group[PROMPT_A] == pytest.approx(stats.kendalltau(scores[a], mean_a)[0])
    assert set(result) == {"auroc", "auprc", "ap1", "ap2", "spearman", "kendall"}
    with pytest.raises(ValueError, match="8 scores for 9 records"):
        T.evaluate_tia2(records, scores[:8])


# ------------------------------------------------------------------ building a benchmark

@dataclass
class _Verdict:
    """The judgement fields the builder and binary annotators read."""

    prompt: str
    aligned: bool
    plausibility: float = 1.0
    attributes: dict = None
    misaligned_tokens: tuple = ()
    misaligned_points: tuple = ()
    artifact_points: tuple = ()
    aesthetics: float = 1.0


def _fake_world(monkeypatch):
    """Prompts and a judge without the oracle: an image is aligned when its red channel is high."""
    counter = iter(range(10 ** 6))
    monkeypatch.setattr(T, "sample_prompts", lambda subset, n, seed=0, split="any":
                        [f"{subset} prompt {next(counter)}" for _ in range(n)])
    return lambda prompt, image: _Verdict(prompt, bool(image[0, 0, 0] > 127), attributes={})


def _images_for(prompt, n, seed):
    rng = np.random.default_rng(seed)
    return [np.full((8, 8, 3), 250 * (i % 2), np.uint8) + rng.integers(0, 2, (8, 8, 3), dtype=np.uint8)
            for i in range(n)]


def test_build_shapes_tia2_layout_labels_and_images(tmp_path, monkeypatch):
    judge = _fake_world(monkeypatch)
    panel = make_panel(3, noise=NoiseConfig.none(), seed=0)
    files = T.build_shapes_tia2(tmp_path, _images_for, n_prompts={"counting": 2, "comprehensive": 1}, n_images=4,
                                panel=panel, judge=judge)
    assert set(files) == {"counting", "comprehensive"}
    assert files["counting"] == tmp_path / "counting" / "human_labels_counting.json"
    records = T.load_tia2(files["counting"])
    assert len(records) == 8 and records[0].key == "image_0_0.png"
    # noise-free annotators: labels equal the judge's verdict (odd images are white -> aligned)
    assert [r.labels for r in records[:4]] == [(0, 0, 0), (1, 1, 1), (0, 0, 0), (1, 1, 1)]
    images = T.load_images(records, files["counting"].parent)
    assert all(img.dtype == np.uint8 and img.shape == (8, 8, 3) for img in images)
    seed0 = int(np.random.SeedSequence([0, 0, 0]).generate_state(1)[0])
    assert np.array_equal(images[1], _images_for("", 4, seed0)[1])   # PNG round trip is lossless
    oracle = json.loads((tmp_path / "counting" / "oracle_counting.json").read_text())
    assert oracle["image_0_1.png"] == {"aligned": 1, "plausibility": 1.0}
    assert T.per_prompt_alignment(records) == {"counting prompt 0": 0.5, "counting prompt 1": 0.5}


def test_build_shapes_tia2_noisy_panel_is_reproducible(tmp_path, monkeypatch):
    judge = _fake_world(monkeypatch)
    kwargs = dict(n_prompts={"composition": 2}, n_images=6, panel=make_panel(3, noise={"flip_prob": 0.3}, seed=1),
                  judge=judge)
    one = T.load_tia2(T.build_shapes_tia2(tmp_path / "a", _images_for, **kwargs)["composition"])
    two = T.load_tia2(T.build_shapes_tia2(tmp_path / "b", _images_for, **kwargs)["composition"])
    assert [r.labels for r in one] == [r.labels for r in two]
    assert any(len(set(r.labels)) == 2 for r in one)   # noisy annotators disagree somewhere


def test_build_shapes_tia2_checks_its_inputs(tmp_path, monkeypatch):
    judge = _fake_world(monkeypatch)
    with pytest.raises(ValueError, match="expected uint8"):
        T.build_shapes_tia2(tmp_path, lambda p, n, s: [np.zeros((8, 8, 3))] * n, {"counting": 1}, 2, judge=judge)
    with pytest.raises(ValueError, match="returned 1 images, asked for 2"):
        T.build_shapes_tia2(tmp_path, lambda p, n, s: [np.zeros((8, 8, 3), np.uint8)], {"counting": 1}, 2,
                            judge=judge)
    with pytest.raises(ValueError, match="unknown subsets"):
        T.build_shapes_tia2(tmp_path, _images_for, {"counting": 1, "colour": 1}, 2, judge=judge)
    with pytest.raises(ValueError, match="3 labels per image"):
        T.build_shapes_tia2(tmp_path, _images_for, {"counting": 1}, 2, panel=make_panel(2), judge=judge)


# ------------------------------------------------------------------ with the real world

def _world_with_judge():
    from feedbacklab import world
    if not hasattr(world, "judge"):
        pytest.skip("feedbacklab.world.judge is not available yet")
    return world


def test_sample_prompts_follow_the_subsets():
    world = _world_with_judge()
    counting = T.sample_prompts("counting", 6, seed=0)
    assert len(set(counting)) == 6 and {world.parse(p).family for p in counting} == {"attribute"}
    comprehensive = T.sample_prompts("comprehensive", 6, seed=0)
    assert {world.parse(p).family for p in comprehensive} == {"attribute", "composition", "spatial"}
    with pytest.raises(ValueError, match="unknown subset"):
        T.sample_prompts("colour", 3)


def test_build_shapes_tia2_with_rendered_images(tmp_path):
    _world_with_judge()
    source = T.rendered_images(p_misaligned=0.5, size=64)
    files = T.build_shapes_tia2(tmp_path, source, n_prompts={"counting": 2, "composition": 2}, n_images=6,
                                panel=make_panel(3, noise=NoiseConfig.none()), seed=0)
    for subset, path in files.items():
        records = T.load_tia2(path)
        oracle = json.loads((path.parent / f"oracle_{subset}.json").read_text())
        assert len(records) == 12
        assert [r.majority for r in records] == [oracle[r.key]["aligned"] for r in records]
        rates = T.per_prompt_alignment(records)
        assert len(rates) == 2 and all(0.0 <= v <= 1.0 for v in rates.values())
    labels = [r.majority for p in files.values() for r in T.load_tia2(p)]
    assert 0 < np.mean(labels) < 1   # the demo source yields both aligned and misaligned images
    oracle_scores = [float(r.majority) for r in T.load_tia2(files["counting"])]
    result = T.evaluate_tia2(T.load_tia2(files["counting"]), oracle_scores)
    assert math.isnan(result["auroc"].mean) or result["auroc"].mean == 1.0
