"""RichHF-18K TFRecords: the reader on a fixture in the real schema, the writer's round trip, bad input."""
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from tfrecord import TFRecordWriter

from feedbacklab.datasets import richhf as R
from feedbacklab.feedback.rich import RichLabel

FIXTURE_DIR = Path(__file__).parent / "fixtures" / "richhf"
FIXTURE = FIXTURE_DIR / "fixture.tfrecord"
PROMPTS = FIXTURE_DIR / "prompts.json"
NAMES = ["0b1d9f2e-5c3a-4e8b-9a61-2f7c4d8e1a90.jpg", "7e4a2c18-9d3b-4f6e-8c05-b1a3e9f20d47.jpg",
         "c39f5b70-1e2d-4a8c-b6f4-8d0e7a5c3b21.jpg"]


def _png(array) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _record(**changes):
    """One feature dict in the real schema (``tfrecord`` package form); a change to None drops the feature."""
    record = {"filename": (b"a.jpg", "byte"), "aesthetics_score": (0.5, "float"), "artifact_score": (0.75, "float"),
              "misalignment_score": (0.25, "float"), "overall_score": (1.0, "float"),
              "artifact_map": (_png(np.zeros((32, 32))), "byte"),
              "misalignment_map": (_png(np.zeros((32, 32))), "byte"),
              "prompt_misalignment_label": (b"1 0 1", "byte")}
    record.update(changes)
    return {k: v for k, v in record.items() if v is not None}


def _write(path, records):
    writer = TFRecordWriter(str(path))
    for record in records:
        writer.write(record)
    writer.close()
    return path


def _label(item_id, prompt, keywords, seed, size=16):
    rng = np.random.default_rng(seed)
    maps = {"implausible": rng.random((size, size)), "misaligned": np.zeros((size, size))}
    maps["implausible"][0, :3] = (0.0, 1.0, 0.5)
    maps["misaligned"][2:5, 3:9] = 1.0
    scores = {"plausibility": 0.25, "alignment": 1.0, "aesthetics": 0.0, "overall": 0.6666667}
    return RichLabel(item_id, prompt, scores, maps, tuple(prompt.split(" ")), keywords)


def test_tokens_follow_the_official_split():
    # match_label_to_token.py's own example: 10 tokens for a 10-label string
    assert R.richhf_tokens("RichHF-18K: a dataset for rich human feedback on generative images.") == (
        "RichHF-18K", "a", "dataset", "for", "rich", "human", "feedback", "on", "generative", "images")
    assert R.richhf_tokens(' two  "red" circles;on,a mat?! ') == ("two", "red", "circles", "on", "a", "mat")


def test_read_fixture_in_the_real_schema():
    labels = R.read_richhf_tfrecord(FIXTURE, prompts=PROMPTS).labels
    assert [lab.item_id for lab in labels] == NAMES
    first, second, third = labels
    assert first.prompt == 'A cat, wearing a "top hat"; oil painting.'
    assert first.tokens == ("A", "cat", "wearing", "a", "top", "hat", "oil", "painting")
    assert first.keywords == (0, 0, 0, 1, 1, 1, 0, 0)  # file "1 1 1 0 0 0 1 1": 0 = misaligned there
    assert second.keywords == (1, 0, 1, 0, 0, 0, 0) and third.keywords == (0,) * 6
    assert first.scores == pytest.approx({"plausibility": 0.5, "alignment": 0.5833333, "aesthetics": 0.75,
                                          "overall": 0.6666667})
    assert third.scores == {"plausibility": 1.0, "alignment": 1.0, "aesthetics": 1.0, "overall": 1.0}
    for lab in labels:
        for m in lab.heatmaps.values():
            assert m.shape == (512, 512) and m.dtype == np.float32
    implausible = first.heatmaps["implausible"]
    assert implausible[120, 300] == pytest.approx(2 / 3)  # two of three annotators' discs overlap there
    assert implausible[380, 200] == pytest.approx(1 / 3) and implausible[0, 0] == 0.0
    assert sorted(np.unique(second.heatmaps["misaligned"]).round(4)) == [0.0, 0.3333, 0.6667]
    assert not third.heatmaps["implausible"].any() and not third.heatmaps["misaligned"].any()


def test_read_without_prompts_keeps_labels_and_blank_tokens():
    labels = R.read_richhf_tfrecord(FIXTURE).labels
    assert [lab.prompt for lab in labels] == ["", "", ""]
    assert labels[0].tokens == ("",) * 8 and labels[0].keywords == (0, 0, 0, 1, 1, 1, 0, 0)


def test_prompts_may_be_keyed_by_the_pick_a_pic_uid():
    by_uid = {Path(name).stem: prompt for name, prompt in json.loads(PROMPTS.read_text()).items()}
    labels = R.read_richhf_tfrecord(FIXTURE, prompts=by_uid).labels
    assert labels[1].prompt == "two dogs playing chess in the park" and labels[1].item_id == NAMES[1]


@pytest.fixture
def images_dir(tmp_path):
    """The fixture's two images (512 and 256 px) plus a 300x200 one for the third record."""
    root = tmp_path / "images"
    shutil.copytree(FIXTURE_DIR / "images", root)
    Image.new("RGB", (200, 300), (10, 200, 30)).save(root / NAMES[2])
    return root


def test_read_with_images(images_dir):
    s = R.read_richhf_tfrecord(FIXTURE, prompts=PROMPTS, images_dir=images_dir, image_size=512)
    assert s.images.shape == (3, 512, 512, 3) and s.images.dtype == np.uint8
    assert tuple(s.images[2, 100, 100]) == (10, 200, 30)
    small = R.read_richhf_tfrecord(FIXTURE, prompts=PROMPTS, images_dir=images_dir, image_size=(48, 64),
                                   map_size=(48, 64))
    assert small.images.shape == (3, 48, 64, 3)
    assert all(m.shape == (48, 64) for lab in small.labels for m in lab.heatmaps.values())
    assert R.read_richhf_tfrecord(FIXTURE).images is None


def test_write_then_read_round_trip(tmp_path):
    labels = [_label("w0", "two red circles on a blue background", (0, 1, 0, 0, 0, 1, 0), seed=0),
              _label("w1", "a green square", (0, 0, 0), seed=1),
              _label("w2", "a blue triangle to the left of a red circle", (0, 0, 0, 0, 0, 0, 0, 0, 0, 1), seed=2)]
    path = R.write_richhf_tfrecord(labels, tmp_path / "out" / "train.tfrecord")
    sidecar = tmp_path / "out" / "train.prompts.json"
    assert json.loads(sidecar.read_text()) == {lab.item_id: lab.prompt for lab in labels}
    back = R.read_richhf_tfrecord(path, prompts=sidecar).labels
    for lab, got in zip(labels, back, strict=True):
        assert (got.item_id, got.prompt, got.tokens) == (lab.item_id, lab.prompt, lab.tokens)
        assert got.keywords == lab.keywords
        assert got.scores == pytest.approx(lab.scores, abs=1e-6)  # float32 in the file
        for kind in lab.heatmaps:
            assert got.heatmaps[kind].shape == (16, 16)  # the label's own resolution, not 512x512
            np.testing.assert_allclose(got.heatmaps[kind], lab.heatmaps[kind], atol=0.5 / 255 + 1e-6)
        assert got.heatmaps["misaligned"][3, 4] == 1.0 and got.heatmaps["implausible"][0, 0] == 0.0


def test_writer_uses_the_real_schema_and_given_filenames(tmp_path):
    from tfrecord.reader import tfrecord_loader

    labels = [_label("w0", "a green square", (1, 0, 0), seed=0)]
    path = R.write_richhf_tfrecord(labels, tmp_path / "x.tfrecord", filenames=["pick/abc.jpg"],
                                   prompts_path=tmp_path / "p.json")
    (raw,) = list(tfrecord_loader(str(path), None))
    assert set(raw) == set(R.RICHHF_FEATURES)
    assert raw["filename"] == b"pick/abc.jpg" and raw["prompt_misalignment_label"] == b"0 1 1"
    with Image.open(io.BytesIO(raw["misalignment_map"])) as im:
        assert (im.format, im.mode, im.size) == ("PNG", "L", (16, 16))
    assert json.loads((tmp_path / "p.json").read_text()) == {"pick/abc.jpg": "a green square"}
    assert R.read_richhf_tfrecord(path, prompts=tmp_path / "p.json").labels[0].item_id == "pick/abc.jpg"


def test_writer_rejects_what_the_file_cannot_hold(tmp_path):
    good = _label("w0", "a green square", (1, 0, 0), seed=0)
    comma = RichLabel("w1", "a cat, a dog", good.scores, good.heatmaps, ("a", "cat,", "a", "dog"), (0, 0, 0, 0))
    with pytest.raises(ValueError, match=r"label 'w1': tokens .* are not the RichHF tokens"):
        R.write_richhf_tfrecord([good, comma], tmp_path / "x.tfrecord")
    hot = RichLabel("w2", "a green square", good.scores, {**good.heatmaps, "misaligned": np.full((16, 16), 1.5)},
                    good.tokens, good.keywords)
    with pytest.raises(ValueError, match=r"label 'w2' map 'misaligned': heatmap values must lie in \[0, 1\]"):
        R.write_richhf_tfrecord([hot], tmp_path / "x.tfrecord")
    with pytest.raises(ValueError, match=r"duplicate filenames \['w0'\]"):
        R.write_richhf_tfrecord([good, good], tmp_path / "x.tfrecord")
    with pytest.raises(ValueError, match="2 filenames for 1 labels"):
        R.write_richhf_tfrecord([good], tmp_path / "x.tfrecord", filenames=["a", "b"])
    assert not (tmp_path / "x.tfrecord").exists()  # checked before anything is written


@pytest.mark.parametrize("changes, message", [
    ({"artifact_map": None}, r"record 0 \('a.jpg'\) lacks feature\(s\) \['artifact_map'\]; the RichHF-18K schema "
                             r"is: filename \(bytes\), aesthetics_score \(float\)"),
    ({"filename": None, "overall_score": None}, r"record 0 lacks feature\(s\) \['filename', 'overall_score'\]"),
    ({"overall_score": (1, "int")}, r"feature 'overall_score' must hold one float_list value, got 1 int64_list values"),
    ({"aesthetics_score": ([0.5, 0.5], "float")},
     "feature 'aesthetics_score' must hold one float_list value, got 2 float_list"),
    ({"artifact_score": (4.0, "float")}, r"artifact_score=4.0 is outside \[0, 1\]"),
    ({"prompt_misalignment_label": (b"1 2 0", "byte")}, "prompt_misalignment_label must be space-separated 0/1"),
    ({"misalignment_map": (_png(np.zeros((16, 32))), "byte")},
     r"'a.jpg' maps differ in size \(H, W\): \{'artifact_map': \(32, 32\), 'misalignment_map': \(16, 32\)\}"),
    ({"artifact_map": (b"not an image", "byte")}, "'a.jpg' artifact_map is not an image"),
])
def test_reader_rejects_records_off_the_schema(tmp_path, changes, message):
    path = _write(tmp_path / "bad.tfrecord", [_record(**changes)])
    with pytest.raises(R.RichHFFormatError, match=message):
        R.read_richhf_tfrecord(path)


def test_reader_rejects_files_that_are_not_tfrecords(tmp_path):
    with pytest.raises(FileNotFoundError, match="RichHF TFRecord not found: .*missing.tfrecord"):
        R.read_richhf_tfrecord(tmp_path / "missing.tfrecord")
    (tmp_path / "labels.json").write_text(json.dumps({"a.jpg": {"score": 1}}))
    with pytest.raises(R.RichHFFormatError, match="is not a TFRecord file"):
        R.read_richhf_tfrecord(tmp_path / "labels.json")
    (tmp_path / "empty.tfrecord").write_bytes(b"")
    with pytest.raises(R.RichHFFormatError, match="empty file, no records"):
        R.read_richhf_tfrecord(tmp_path / "empty.tfrecord")
    whole = FIXTURE.read_bytes()
    (tmp_path / "cut.tfrecord").write_bytes(whole[:-100])
    with pytest.raises(R.RichHFFormatError, match="truncated TFRecord after 2 records"):
        R.read_richhf_tfrecord(tmp_path / "cut.tfrecord")


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if a map or image is decoded: the error must come before the expensive work."""
    def fail(*args, **kwargs):
        raise AssertionError("decoded before the input was checked")
    monkeypatch.setattr(R, "_decode_map", fail)
    monkeypatch.setattr(R, "_load_image", fail)


def test_prompts_must_cover_and_fit_every_record(tmp_path, no_decoding):
    prompts = json.loads(PROMPTS.read_text())
    with pytest.raises(R.RichHFFormatError, match=r"1 of 3 records have no prompt, e.g. '7e4a2c18-.*\.jpg' "
                                                  r"\(looked up as \['7e4a2c18-.*\.jpg', '7e4a2c18-[0-9a-f-]*'\]\)"):
        R.read_richhf_tfrecord(FIXTURE, prompts={k: v for k, v in prompts.items() if k != NAMES[1]})
    with pytest.raises(R.RichHFFormatError, match=r"'c39f5b70-.*\.jpg': 6 misalignment labels but its prompt "
                                                  r"'a red apple' has 3 tokens"):
        R.read_richhf_tfrecord(FIXTURE, prompts={**prompts, NAMES[2]: "a red apple"})
    with pytest.raises(FileNotFoundError, match="prompts file not found"):
        R.read_richhf_tfrecord(FIXTURE, prompts=tmp_path / "nope.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(R.RichHFFormatError, match=r"a prompts file is a JSON object \{filename: prompt\}"):
        R.read_richhf_tfrecord(FIXTURE, prompts=tmp_path / "list.json")


def test_images_must_exist_and_fit_the_maps(tmp_path, images_dir, no_decoding):
    with pytest.raises(FileNotFoundError, match=rf"image '{NAMES[2]}' not found in .*fixtures/richhf/images"):
        R.read_richhf_tfrecord(FIXTURE, prompts=PROMPTS, images_dir=FIXTURE_DIR / "images", image_size=512)
    with pytest.raises(FileNotFoundError, match="images directory not found"):
        R.read_richhf_tfrecord(FIXTURE, images_dir=tmp_path / "nowhere")
    with pytest.raises(ValueError, match="images differ in size .*; pass image_size"):
        R.read_richhf_tfrecord(FIXTURE, images_dir=images_dir)
    with pytest.raises(ValueError, match=r"maps are \(512, 512\) but its image is \(64, 64\) \(H, W\); pass map_size"):
        R.read_richhf_tfrecord(FIXTURE, images_dir=images_dir, image_size=64)
    with pytest.raises(ValueError, match=r"image_size must be a positive int or \(height, width\)"):
        R.read_richhf_tfrecord(FIXTURE, images_dir=images_dir, image_size=(0, 64))


def test_summary_of_the_fixture_by_hand():
    labels = R.read_richhf_tfrecord(FIXTURE, prompts=PROMPTS).labels
    s = R.summarize_richhf(labels)
    assert s["items"] == 3 and s["mean_plausibility"] == pytest.approx((0.5 + labels[1].scores["plausibility"] + 1) / 3)
    assert s["share_with_implausible_region"] == pytest.approx(
        np.mean([lab.heatmaps["implausible"].max() > 0 for lab in labels]))
    assert s["share_with_misaligned_region"] == pytest.approx(2 / 3)  # the third item has no region at all
    assert s["share_misaligned_tokens"] == pytest.approx((3 + 2 + 0) / (8 + 7 + 6))


RELEASE = FIXTURE_DIR / "release"  # the release's layout in miniature: train/dev/test.tfrecord, prompts, images


def test_read_release_splits_at_one_size():
    splits = R.read_richhf_splits(RELEASE, RELEASE / "prompts.json", RELEASE / "images", size=32)
    assert list(splits) == ["train", "dev", "test"] and [len(s.labels) for s in splits.values()] == [8, 3, 3]
    for split, s in splits.items():
        alone = R.read_richhf_tfrecord(RELEASE / f"{split}.tfrecord", RELEASE / "prompts.json", RELEASE / "images", 32, 32)
        assert [lab.item_id for lab in s.labels] == [lab.item_id for lab in alone.labels]
        assert all(lab.item_id.startswith(split) for lab in s.labels)
        np.testing.assert_array_equal(s.images, alone.images)
        assert s.images.shape == (len(s.labels), 32, 32, 3)
        assert all(m.shape == (32, 32) for lab in s.labels for m in lab.heatmaps.values())
    x = splits["dev"].tensors()
    assert x.shape == (3, 3, 32, 32) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1
    np.testing.assert_allclose(x[1].permute(1, 2, 0).numpy() * 255, splits["dev"].images[1], atol=1e-4)


def test_a_limit_reads_only_the_first_records(monkeypatch):
    full = R.read_richhf_tfrecord(RELEASE / "train.tfrecord", RELEASE / "prompts.json")
    seen = []
    real_row = R._row
    monkeypatch.setattr(R, "_row", lambda feats, where: seen.append(where) or real_row(feats, where))
    first = R.read_richhf_tfrecord(RELEASE / "train.tfrecord", RELEASE / "prompts.json", limit=3)
    assert len(seen) == 3  # the rest of the file is not parsed
    assert [lab.item_id for lab in first.labels] == [lab.item_id for lab in full.labels[:3]]
    np.testing.assert_array_equal(first.labels[2].heatmaps["implausible"], full.labels[2].heatmaps["implausible"])
    splits = R.read_richhf_splits(RELEASE, RELEASE / "prompts.json", limits={"train": 5, "test": 100})
    assert [len(s.labels) for s in splits.values()] == [5, 3, 3]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="limit must be a positive int"):
            R.read_richhf_tfrecord(RELEASE / "train.tfrecord", limit=bad)


def test_release_splits_bad_input(tmp_path):
    shutil.copy(RELEASE / "train.tfrecord", tmp_path / "train.tfrecord")
    with pytest.raises(FileNotFoundError, match=r"lacks \['dev.tfrecord', 'test.tfrecord'\].*train.tfrecord, "
                                                r"dev.tfrecord and test.tfrecord"):
        R.read_richhf_splits(tmp_path)
    with pytest.raises(ValueError, match=r"unknown split\(s\) \['validation'\]; accepted: \['train', 'dev', 'test'\]"):
        R.read_richhf_splits(RELEASE, limits={"validation": 3})
    with pytest.raises(ValueError, match="has no images: read it with images_dir"):
        R.read_richhf_tfrecord(RELEASE / "dev.tfrecord").tensors()
