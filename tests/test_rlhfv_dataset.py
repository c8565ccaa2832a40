"""The RLHF-V parquet loader (datasets.rlhfv) on fixtures written with pyarrow in the release's schema."""
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from feedbacklab.datasets import RLHFVFormatError, load_rlhfv, records_from_corrections, segment_spans, write_rlhfv
from feedbacklab.datasets.rlhfv import to_preference_pairs
from feedbacklab.feedback.annotators import make_correction

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

REJECTED = "The image shows a man riding a horse on the beach.\nThere are two dogs next to him."
CHOSEN = "The image shows a man riding a horse on the beach.\nThere is one dog next to him."


def _png(color):
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), color, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _release_file(path, rows):
    """A parquet file laid out as RLHF-V-Dataset.parquet (dataset card features), written independently of ours."""
    schema = pa.schema([("ds_name", pa.string()), ("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("text", pa.string()), ("origin_dataset", pa.string()), ("origin_split", pa.string()),
                        ("idx", pa.int64()), ("image_path", pa.string())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


def _row(idx, text, color=(10, 20, 30)):
    return {"ds_name": "RLHF-V", "image": {"bytes": _png(color), "path": None}, "text": text,
            "origin_dataset": "COCO", "origin_split": json.dumps({"model": "Muffin", "type": "detailed description"}),
            "idx": idx, "image_path": f"{idx}.jpg"}


def test_loads_release_schema_and_computes_segments(tmp_path):
    text = json.dumps({"question": "Describe the image in detail.", "chosen": CHOSEN, "rejected": REJECTED})
    path = _release_file(tmp_path / "RLHF-V-Dataset.parquet", [_row(7, text), _row(8, text, (200, 0, 0))])
    recs = load_rlhfv(path)
    assert [r.idx for r in recs] == [7, 8] and recs[0].question.startswith("Describe")
    r = recs[0]
    assert [r.rejected[s:e] for s, e in r.rejected_spans] == ["are two dogs"]
    assert [r.chosen[s:e] for s, e in r.chosen_spans] == ["is one dog"]
    assert r.origin_split["model"] == "Muffin" and r.image_path == "7.jpg"
    assert r.image_array().shape == (8, 8, 3) and recs[1].image_array()[0, 0].tolist() == [200, 0, 0]
    pairs = to_preference_pairs(recs)
    assert pairs[0].chosen == CHOSEN and pairs[0].image.shape == (3, 8, 8) and pairs[0].question == ""
    assert torch.equal(pairs[1].image[:, 0, 0], torch.tensor([200, 0, 0]) / 255.0)
    # the real release's images differ in size: size= makes them one batch (a uniform image stays uniform)
    resized = to_preference_pairs(recs, size=12)
    assert resized[1].image.shape == (3, 12, 12) and torch.allclose(resized[1].image[:, 5, 5], pairs[1].image[:, 0, 0])
    assert torch.stack([p.image for p in resized]).shape == (2, 3, 12, 12)
    with pytest.raises(ValueError, match="positive"):
        to_preference_pairs(recs, size=0)


def test_loads_rlaifv_flat_columns(tmp_path):
    table = pa.Table.from_pylist([{"question": "q", "chosen": "a cat", "rejected": "a dog", "idx": "x1",
                                   "image": {"bytes": _png(0), "path": "a.jpg"}}])
    pq.write_table(table, tmp_path / "rlaif.parquet")
    (r,) = load_rlhfv(tmp_path / "rlaif.parquet")
    assert (r.chosen, r.rejected, r.rejected_spans, r.chosen_spans) == ("a cat", "a dog", ((2, 5),), ((2, 5),))


@pytest.mark.parametrize("text, msg", [(json.dumps({"question": "q", "chosen": "a"}), r"missing \['rejected'\]"),
                                       ("{not json", "not a JSON object"),
                                       (json.dumps({"question": "q", "chosen": "same", "rejected": "same"}), "identical")])
def test_bad_records_say_what_is_wrong(tmp_path, text, msg):
    path = _release_file(tmp_path / "bad.parquet", [_row(0, text)])
    with pytest.raises(RLHFVFormatError, match=msg):
        load_rlhfv(path)


def test_missing_file_and_wrong_columns(tmp_path):
    with pytest.raises(FileNotFoundError, match="openbmb/RLHF-V-Dataset"):
        load_rlhfv(tmp_path / "nope.parquet")
    pq.write_table(pa.Table.from_pylist([{"prompt": "p"}]), tmp_path / "other.parquet")
    with pytest.raises(RLHFVFormatError, match="expected RLHF-V's 'text'"):
        load_rlhfv(tmp_path / "other.parquet")


def test_segment_spans_match_caption_edits_on_world_captions():
    cases = [("three red squares on a beige background", "two red squares on a beige background"),
             ("three red squares on a beige background", "a red square and a red circle on a beige background"),
             ("a red circle and a blue square on a gray background", "a red circle on a gray background")]
    for original, corrected in cases:
        c = make_correction("a", "i", original, corrected)
        assert segment_spans(original, corrected) == (c.original_char_spans, c.corrected_char_spans)
    assert segment_spans("one two", "one two three") == (((7, 7),), ((8, 13),))  # an insertion at the end


def test_world_corrections_round_trip(tmp_path):
    c1 = make_correction("s0-a0", "cap-1", "three red squares on a beige background", "two red squares on a beige background")
    c2 = make_correction("s0-a1", "cap-2", "one red circle on a gray background", "one red circle on a gray background")
    images = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    images[0, :, :, 0] = 255
    recs = records_from_corrections([c1, c2], images)
    assert len(recs) == 1  # the unchanged caption is not a pair
    back = load_rlhfv(write_rlhfv(tmp_path / "world.parquet", recs))
    assert back[0].chosen == c1.corrected and back[0].rejected == c1.original
    assert back[0].chosen_spans == c1.corrected_char_spans and back[0].rejected_spans == c1.original_char_spans
    assert back[0].origin_split["annotator"] == "s0-a0" and (back[0].image_array() == images[0]).all()


def test_summary_counts_pairs_segments_and_words(tmp_path):
    from feedbacklab.datasets.rlhfv import summarize_rlhfv

    text = json.dumps({"question": "Describe the image in detail.", "chosen": CHOSEN, "rejected": REJECTED})
    recs = load_rlhfv(_release_file(tmp_path / "r.parquet", [_row(1, text), _row(2, text)]))
    s = summarize_rlhfv(recs)
    assert s["pairs"] == 2 and s["changed_segments_per_pair"] == 1
    assert s["words_rejected"] == len(REJECTED.split()) and s["words_chosen"] == len(CHOSEN.split())
    assert s["share_of_rejected_changed"] == pytest.approx(len("are two dogs") / len(REJECTED))


def test_fixture_release_file_loads():
    """tests/fixtures/rlhfv (notebook 50's smoke run reads it as rlhfv_release) is in the release's schema."""
    from pathlib import Path

    recs = load_rlhfv(Path(__file__).parent / "fixtures" / "rlhfv" / "RLHF-V-Dataset.parquet")
    assert len(recs) == 3 and all(r.rejected_spans for r in recs)
