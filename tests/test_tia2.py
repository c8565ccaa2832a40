"""TIA2 format: loader, writer, per-prompt evaluation, the ShapesWorld benchmark builder, and TextNorm's
release files (contrastive prompt sets, published per-prompt scores)."""
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from feedbacklab.datasets import alignment_scores as S
from feedbacklab.datasets import prompt_sets as P
from feedbacklab.datasets import tia2 as T
from feedbacklab.feedback import NoiseConfig, make_panel

FIXTURE = Path(__file__).parent / "fixtures" / "tia2_small.json"
RELEASE = Path(__file__).parent / "fixtures" / "textnorm"  # TextNorm's layout: prompts/, alignment_scores/
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


def test_abstentions_are_kept_and_count_against_alignment():
    records = T.load_tia2(FIXTURE)
    # -1 (no valid label) stays in the record; it is neither a 1 nor a 0
    assert records[2].labels == (-1, 0, 1) and records[2].n_abstained == 1
    assert records[0].n_abstained == 0
    # aligned iff at least two labels are 1: [-1, 1, 1] is aligned (a sum of labels would say no) ...
    assert records[6].labels == (-1, 1, 1) and records[6].majority == 1
    assert records[6].mean_label == pytest.approx(2 / 3)
    # ... and [-1, -1, 1] is not (a majority of the valid labels would say yes)
    assert records[7].labels == (-1, -1, 1) and records[7].majority == 0
    assert records[7].mean_label == pytest.approx(1 / 3)
    assert records[2].majority == 0 and records[2].mean_label == pytest.approx(1 / 3)


def test_per_prompt_alignment_counts_images_with_two_yes_labels():
    # the public score files' "human" rate: e.g. 21 of 50 for the first composition prompt, which has abstentions
    labels = [(-1, 1, 1), (-1, 0, 1), (0, 0, -1), (1, 1, 1), (1, -1, 1), (-1, -1, -1)]
    records = [T.TIA2Record(f"image_{i}.jpg", f"image_{i}.jpg", "p", lab) for i, lab in enumerate(labels)]
    assert T.per_prompt_alignment(records) == {"p": pytest.approx(3 / 6)}


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
     r"entry 'image_2_0_0.jpg': 'human_labels' must each be 1, 0 or -1 \(no valid label\)"),
    (lambda d: {**d, "image_2_0_0.jpg": {**d["image_2_0_0.jpg"], "human_labels": [1, -2, 0]}},
     "entry 'image_2_0_0.jpg': 'human_labels' must each be 1, 0 or -1"),
    (lambda d: {**d, "image_2_0_0.jpg": {**d["image_2_0_0.jpg"], "human_labels": [True, False, True]}},
     "entry 'image_2_0_0.jpg': 'human_labels' must each be 1, 0 or -1"),
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
    # prompts B (all aligned) and C (none aligned) have a single class: AUROC and AUPRC skip them
    assert result["auroc"].n_undefined == 2 and result["auroc"].mean == pytest.approx(0.75)
    assert math.isnan(result["auprc"].per_group[PROMPT_B]) and math.isnan(result["auprc"].per_group[PROMPT_C])
    assert result["auprc"].n_undefined == 2
    assert result["auprc"].mean == pytest.approx(average_precision_score([1, 1, 0, 0], scores[a]))
    # AP@2 for A: ranking .9 (1), .4 (0) -> (1/1) / 1
    assert result["ap2"].per_group[PROMPT_A] == 1.0
    assert result["ap1"].per_group[PROMPT_C] == 0.0
    mean_a = [1, 2 / 3, 1 / 3, 0]
    assert result["spearman"].per_group[PROMPT_A] == pytest.approx(stats.spearmanr(scores[a], mean_a)[0])
    assert result["kendall"].per_group[PROMPT_A] == pytest.approx(stats.kendalltau(scores[a], mean_a)[0])
    assert set(result) == {"auroc", "auprc", "ap1", "ap2", "spearman", "kendall"}
    assert set(T.evaluate_tia2(records, scores)) == {"auroc", "auprc", "ap5", "ap10", "ap25", "spearman", "kendall"}
    with pytest.raises(ValueError, match="8 scores for 9 records"):
        T.evaluate_tia2(records, scores[:8])


def test_subset_names_and_release_layout():
    assert T.check_subset("counting") == "counting"
    assert T.release_path("r", "labels", "composition") == Path("r/human_annotations/human_labels_composition.json")
    assert T.release_path("r", "prompts", "counting") == Path("r/prompts/prompt_set_counting.json")
    assert T.release_path("r", "scores", "comprehensive") == \
        Path("r/alignment_scores/alignment_scores_comprehensive.json")
    with pytest.raises(ValueError, match=r"unknown subset 'colour'; accepted TIA2 subsets: \('counting', "):
        T.release_path("r", "scores", "colour")
    with pytest.raises(ValueError, match="unknown release file kind 'images'"):
        T.release_path("r", "images", "counting")


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


def test_build_shapes_tia2_abstentions(tmp_path, monkeypatch):
    judge = _fake_world(monkeypatch)
    kwargs = dict(n_prompts={"counting": 2}, n_images=10, panel=make_panel(3, noise=NoiseConfig.none(), seed=0),
                  judge=judge)
    plain = T.load_tia2(T.build_shapes_tia2(tmp_path / "plain", _images_for, **kwargs)["counting"])
    runs = [T.load_tia2(T.build_shapes_tia2(tmp_path / f"abstain{i}", _images_for, p_abstain=0.3, **kwargs)["counting"])
            for i in range(2)]
    assert [r.labels for r in runs[0]] == [r.labels for r in runs[1]]   # seeded
    assert all(r.n_abstained == 0 for r in plain)                       # default: no abstention
    n_abstained = sum(r.n_abstained for r in runs[0])
    assert 0 < n_abstained < 60
    # an abstention replaces a label; the other labels are the noise-free panel's
    for with_abstain, without in zip(runs[0], plain):
        assert all(a in (-1, b) for a, b in zip(with_abstain.labels, without.labels))
        assert with_abstain.majority == int(with_abstain.labels.count(1) >= 2)


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
    with pytest.raises(ValueError, match=r"p_abstain is a probability in \[0, 1\)"):
        T.build_shapes_tia2(tmp_path, _images_for, {"counting": 1}, 2, judge=judge, p_abstain=1.0)


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


# ------------------------------------------------------------------ TextNorm release: prompt sets

COUNTING_SET = RELEASE / "prompts" / "prompt_set_counting.json"


def test_load_prompt_set_fixture_in_the_public_format():
    prompt_set = P.load_prompt_set(T.release_path(RELEASE, "prompts", "counting"))
    assert prompt_set == {
        "a realistic photo of an airplane": ["a realistic photo of two airplanes",
                                             "a realistic photo of three airplanes"],
        "a realistic photo of two airplanes": ["a realistic photo of an airplane",
                                               "a realistic photo of three airplanes",
                                               "a realistic photo of four airplanes"]}


def test_write_then_load_prompt_set(tmp_path):
    mapping = {"one red circle on a white background": ["two red circles on a white background"]}
    path = P.write_prompt_set(mapping, tmp_path / "prompts" / "prompt_set_counting.json")
    assert P.load_prompt_set(path) == mapping
    assert P.load_prompt_set(P.write_prompt_set(P.load_prompt_set(COUNTING_SET), tmp_path / "again.json")) == \
        P.load_prompt_set(COUNTING_SET)
    with pytest.raises(T.TIA2FormatError, match="prompt 'a' has an empty contrastive set"):
        P.write_prompt_set({"a": []}, tmp_path / "empty.json")


@pytest.mark.parametrize("data, message", [
    (["a", "b"], "a prompt set is a JSON object .* got a list"),
    ({"a": "b"}, "prompt 'a' must map to a list of contrastive prompts, got str"),
    ({"a": ["b", 3]}, r"prompt 'a' has contrastive prompts that are not non-empty strings: \[3\]"),
    ({"a": ["b", " "]}, "prompt 'a' has contrastive prompts that are not non-empty strings"),
    ({"a": ["b"], "c": []}, "prompt 'c' has an empty contrastive set"),
    ({"": ["b"]}, "prompts must be non-empty strings"),
])
def test_malformed_prompt_sets_name_the_prompt(tmp_path, data, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(T.TIA2FormatError, match=message):
        P.load_prompt_set(path)


def test_prompt_set_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="prompt set file not found"):
        P.load_prompt_set(tmp_path / "nowhere.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(T.TIA2FormatError, match="not valid JSON"):
        P.load_prompt_set(tmp_path / "broken.json")


def test_world_prompt_set_uses_the_grammar_edits():
    from feedbacklab.world import grammar

    prompts = ["two red circles on a white background", "a red circle and a blue square on a black background"]
    prompt_set = P.world_prompt_set(prompts)
    assert list(prompt_set) == prompts
    assert all(prompt_set[p] == grammar.contrastive_prompts(p) for p in prompts)
    assert "one red circle on a white background" in prompt_set[prompts[0]]   # the count edit
    with pytest.raises(grammar.PromptError):
        P.world_prompt_set(["a realistic photo of an airplane"])
    with pytest.raises(TypeError, match="not one string"):
        P.world_prompt_set(prompts[0])


# ------------------------------------------------------------------ TextNorm release: published scores

def test_load_alignment_scores_fixture():
    scores = S.load_alignment_scores(T.release_path(RELEASE, "scores", "counting"))
    one, two, three = "a realistic photo of an airplane", "a realistic photo of two airplanes", \
        "a realistic photo of three airplanes"
    assert scores.rewards == ["clip", "textnorm_ur"]
    assert scores.human == {one: 0.76, two: 0.1, three: 1.0}
    clip = scores.metrics["clip"]
    assert set(clip) == {"auroc", "auprc", "ap5", "ap10", "ap25", "spearman", "kendall"}  # evaluate_tia2's keys
    assert clip["auroc"].per_group[one] == 0.4 and math.isnan(clip["auroc"].per_group[three])
    # NaN (undefined for an all-aligned prompt) is left out of the mean and counted
    assert clip["auroc"].mean == pytest.approx(0.5) and clip["auroc"].n_undefined == 1
    assert clip["ap5"].mean == pytest.approx((0.6 + 0.0 + 1.0) / 3) and clip["ap5"].n_undefined == 0
    tn = scores.metrics["textnorm_ur"]
    assert tn["spearman"].n_undefined == 1 and tn["spearman"].mean == pytest.approx(0.35)   # null reads as nan
    # per-prompt hyper-parameters are kept apart from the metrics
    assert "scale" not in tn and scores.params == {"textnorm_ur": {"scale": {one: 3.0, two: 10.0, three: 1.0},
                                                                   "lambda": {one: 1.0, two: 0.1, three: 0.5}}}
    assert scores.means()["textnorm_ur"]["auroc"] == pytest.approx(0.75)
    assert scores.means()["clip"]["kendall"] == pytest.approx((-0.04 + 0.11 + 0.16) / 3)


@pytest.mark.parametrize("data, message", [
    ([1, 2], "a score file is a JSON object keyed by prompt, got a JSON list"),
    ({"p": [0.5]}, "prompt 'p': expected an object with 'human' and one object per reward, got list"),
    ({"p": {"clip": {"auroc": 0.5}}}, "prompt 'p': missing key 'human'"),
    ({"p": {"human": 0.5, "clip": 0.7}}, "prompt 'p': reward 'clip' must be an object of metrics, got float"),
    ({"p": {"human": 0.5, "clip": {"auroc": "0.7"}}}, r"prompt 'p': clip.auroc must be a number \(or null\)"),
    ({"p": {"human": True}}, "prompt 'p': 'human' must be a number"),
])
def test_malformed_score_files_name_the_prompt(tmp_path, data, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(T.TIA2FormatError, match=message):
        S.load_alignment_scores(path)
