"""The ImageRewardDB and Pick-a-Pic v2 loaders (datasets.imagerewarddb, .pickapic) on fixtures in the real schemas."""
import io
from pathlib import Path
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image

from feedbacklab.datasets import (ImageRewardDBFormatError, ImageRewardGroup, PickAPicFormatError, PickAPicPair,
                                  load_imagerewarddb, load_pickapic, rankings_from_imagerewarddb,
                                  rankings_from_pickapic, write_imagerewarddb, write_pickapic)
from feedbacklab.feedback.records import Ranking

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

RATINGS = ("overall_rating", "image_text_alignment_rating", "fidelity_rating")


def _image(seed, size=8):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _smooth(color, size=16):
    """A flat image: JPEG keeps it within a few levels."""
    return np.full((size, size, 3), color, dtype=np.uint8)


def _png(image):
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def _group(pid, ranks, seed=0, paths=True):
    n = len(ranks)
    return ImageRewardGroup(pid, f"a painting of prompt {pid}",
                            tuple(f"images/train/train_1/{pid}-{k}.webp" if paths else f"{pid}/{k}" for k in range(n)),
                            tuple(ranks), {c: tuple((k + j) % 7 + 1 for k in range(n)) for j, c in enumerate(RATINGS)},
                            "People", n, tuple(_image(seed + k) for k in range(n)))


def _release_rows(pid, ranks, image=True, **extra):
    """Rows as the release stores them, written without our writer."""
    return [{**({"image": {"bytes": _png(_image(k)), "path": None}} if image else {}), "prompt_id": pid,
             "prompt": f"prompt {pid}", "classification": "Animals", "image_amount_in_total": len(ranks),
             "rank": r, "overall_rating": 5, "image_text_alignment_rating": 4, "fidelity_rating": 6,
             "image_path": f"images/test/test_1/{pid}-{k}.webp", **extra} for k, r in enumerate(ranks)]


def _no_decoding(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("an image was decoded")
    monkeypatch.setattr(Image, "open", refuse)


# ---- ImageRewardDB ----

def test_imagerewarddb_round_trip_and_rankings(tmp_path):
    groups = [_group("000864-0061", [2, 1, 3]), _group("000865-0002", [1, 3, 2, 2], seed=10)]
    path = write_imagerewarddb(groups, tmp_path / "train.parquet")
    loaded = load_imagerewarddb(path, progress=False)
    assert loaded == groups  # prompts, ids, ranks, ratings, classification, totals
    for got, want in zip(loaded, groups):
        assert all(a.dtype == np.uint8 and np.array_equal(a, b) for a, b in zip(got.images, want.images))
    ranking = loaded[0].to_ranking()
    assert isinstance(ranking, Ranking) and ranking.annotator_id == "imagerewarddb"
    assert ranking.order == (1, 0, 2) and ranking.ranks == (2, 1, 3) and ranking.prompt == groups[0].prompt
    assert loaded[1].to_ranking().order == (0, 2, 3, 1)  # the tie (rank 2, rows 2 and 3) keeps release order
    assert [r.item_ids for r in rankings_from_imagerewarddb(loaded)] == [g.item_ids for g in groups]


def test_imagerewarddb_release_rows_struct_image_and_derived_ids(tmp_path):
    """The HF parquet layout (image struct {bytes, path}, int8 columns) written with pyarrow alone."""
    schema = pa.schema([("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
                        ("prompt_id", pa.string()), ("prompt", pa.string()), ("classification", pa.string()),
                        ("image_amount_in_total", pa.int8()), ("rank", pa.int8())]
                       + [(c, pa.int8()) for c in RATINGS])  # the builder's features: no image_path
    rows = [{k: v for k, v in r.items() if k != "image_path"} for r in _release_rows("p1", [3, 1, 2])]
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp_path / "hf.parquet")
    (g,) = load_imagerewarddb(tmp_path / "hf.parquet", progress=False)
    assert g.item_ids == ("p1/0", "p1/1", "p1/2") and g.ranks == (3, 1, 2) and g.classification == "Animals"
    assert g.ratings == {"overall_rating": (5, 5, 5), "image_text_alignment_rating": (4, 4, 4),
                         "fidelity_rating": (6, 6, 6)}
    assert np.array_equal(g.images[1], _image(1)) and g.to_ranking().ranked_ids == ("p1/1", "p1/2", "p1/0")


def test_imagerewarddb_metadata_table_with_extracted_images(tmp_path):
    """metadata-<split>.parquet has no image column: image_path is resolved against the release root."""
    rows = _release_rows("p2", [1, 2], image=False)
    for k, r in enumerate(rows):
        (tmp_path / r["image_path"]).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(_image(k)).save(tmp_path / r["image_path"], format="WEBP", lossless=True)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "metadata-test.parquet")
    pq.write_table(pa.Table.from_pylist(_release_rows("q", [1], image=False)), tmp_path / "metadata-train.parquet")
    (g,) = load_imagerewarddb(tmp_path, split="test", progress=False)
    assert g.item_ids == tuple(r["image_path"] for r in rows) and np.array_equal(g.images[1], _image(1))
    assert [g.prompt_id for g in load_imagerewarddb(tmp_path, load_images=False, progress=False)] == ["p2", "q"]
    (tmp_path / rows[0]["image_path"]).unlink()
    with pytest.raises(FileNotFoundError, match="zip"):
        load_imagerewarddb(tmp_path, split="test", progress=False)


def test_imagerewarddb_folder_in_order_limit_and_no_images(tmp_path, monkeypatch):
    write_imagerewarddb([_group("b", [1, 2])], tmp_path / "train" / "train-00000-of-00002.parquet")
    write_imagerewarddb([_group("a", [2, 1]), _group("c", [1])], tmp_path / "train" / "train-00001-of-00002.parquet")
    assert [g.prompt_id for g in load_imagerewarddb(tmp_path, progress=True)] == ["b", "a", "c"]
    assert [g.prompt_id for g in load_imagerewarddb(tmp_path, limit=2, progress=False)] == ["b", "a"]
    _no_decoding(monkeypatch)
    groups = load_imagerewarddb(tmp_path, load_images=False, split="train", progress=False)
    assert [g.images for g in groups] == [None] * 3 and groups[1].to_ranking().order == (1, 0)


def test_imagerewarddb_missing_column_fails_before_decoding(tmp_path, monkeypatch):
    write_imagerewarddb([_group("ok", [1, 2])], tmp_path / "a.parquet")
    bad = [{k: v for k, v in r.items() if k not in ("image", "rank")} for r in _release_rows("x", [1, 2])]
    pq.write_table(pa.Table.from_pylist(bad), tmp_path / "b.parquet")
    _no_decoding(monkeypatch)
    with pytest.raises(ImageRewardDBFormatError, match=r"b\.parquet.*missing columns \['rank'\].*prompt_id"):
        load_imagerewarddb(tmp_path, progress=False)
    noimage = [{k: v for k, v in r.items() if k not in ("image", "image_path")} for r in _release_rows("y", [1])]
    pq.write_table(pa.Table.from_pylist(noimage), tmp_path / "b.parquet")
    with pytest.raises(ImageRewardDBFormatError, match="image or image_path"):
        load_imagerewarddb(tmp_path, progress=False)
    assert [g.prompt_id for g in load_imagerewarddb(tmp_path, load_images=False, progress=False)] == ["ok", "y"]


def test_imagerewarddb_fixture_reads_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    group = _group("p", [2, 1])
    path = write_imagerewarddb([group], tmp_path / "train.parquet")
    ds = datasets.Dataset.from_parquet(str(path), cache_dir=str(tmp_path / "cache"))
    assert ds.num_rows == 2 and ds["rank"] == [2, 1] and ds.features["rank"].dtype == "int8"
    assert isinstance(ds.features["image"], datasets.Image)
    assert np.array_equal(np.asarray(ds[1]["image"].convert("RGB")), group.images[1])


# ---- Pick-a-Pic v2 ----

def _pair(i, labels=(1.0, 0.0), user=7):
    best = "" if labels[0] == labels[1] else f"uid-{i}-{'ab'[labels[1] > labels[0]]}"
    return PickAPicPair(f"caption {i // 2}", f"uid-{i}-a", f"uid-{i}-b", *labels, user, 100 + i,
                        "SDXL", "SD 2.1", best, images=(_smooth(20 * i), _smooth(255 - 20 * i)))


def test_pickapic_round_trip_ties_and_rankings(tmp_path):
    pairs = [_pair(0), _pair(1, (0.0, 1.0), user=9), _pair(2, (0.5, 0.5))]
    path = write_pickapic(pairs, tmp_path / "test-00000-of-00001.parquet")
    got = load_pickapic(path, progress=False)
    assert list(got) == pairs and got.n_rows == 3 and got.skipped == {"no_label": 0, "not_different": 0, "tie": 0}
    for p, q in zip(got, pairs):
        assert all(a.dtype == np.uint8 and a.shape == (16, 16, 3) for a in p.images)
        assert all(np.abs(a.astype(int) - b).max() <= 3 for a, b in zip(p.images, q.images))  # JPEG
    assert [p.winner for p in got] == [0, 1, None] and [p.tie for p in got] == [False, False, True]
    unnamed = write_pickapic([replace(pairs[1], best_image_uid="")], tmp_path / "unnamed.parquet")
    assert load_pickapic(unnamed, progress=False)[0].best_image_uid == "uid-1-b"  # the writer names the winner
    r = got[1].to_ranking()
    assert (r.annotator_id, r.prompt, r.item_ids, r.order) == ("9", "caption 0", ("uid-1-a", "uid-1-b"), (1, 0))
    with pytest.raises(ValueError, match="tie"):
        got[2].to_ranking()
    assert [r.ranked_ids[0] for r in rankings_from_pickapic(got.pairs)] == ["uid-0-a", "uid-1-b"]
    no_ties = load_pickapic(path, include_ties=False, progress=False)
    assert [p.ranking_id for p in no_ties] == [100, 101] and no_ties.skipped["tie"] == 1


def test_pickapic_skipped_rows_limit_and_folder(tmp_path, monkeypatch):
    base = {"caption": "c", "label_0": 1.0, "label_1": 0.0, "user_id": 3, "jpg_0": _smooth(0), "jpg_1": _smooth(9)}
    rows = [{**base, "ranking_id": 1, "image_0_uid": "a", "image_1_uid": "b", "has_label": True, "are_different": True},
            {**base, "ranking_id": 2, "image_0_uid": "a", "image_1_uid": "c", "has_label": False, "are_different": True,
             "label_0": 0.0},
            {**base, "ranking_id": 3, "image_0_uid": "d", "image_1_uid": "d", "has_label": True,
             "are_different": False}]
    write_pickapic(rows, tmp_path / "data" / "train-00000-of-00002-aa.parquet")
    write_pickapic([_pair(4), _pair(5)], tmp_path / "data" / "train-00001-of-00002-bb.parquet")
    write_pickapic([_pair(9)], tmp_path / "data" / "validation-00000-of-00001-cc.parquet")
    got = load_pickapic(tmp_path, split="train", progress=True)
    assert [p.ranking_id for p in got] == [1, 104, 105]
    assert got.n_rows == 5 and got.skipped == {"no_label": 1, "not_different": 1, "tie": 0}
    assert len(load_pickapic(tmp_path, progress=False)) == 4
    limited = load_pickapic(tmp_path, split="train", limit=2, progress=False)
    assert [p.ranking_id for p in limited] == [1, 104]
    _no_decoding(monkeypatch)
    assert [p.images for p in load_pickapic(tmp_path, load_images=False, progress=False)] == [None] * 4


def test_pickapic_missing_column_and_bad_labels(tmp_path, monkeypatch):
    path = write_pickapic([_pair(0)], tmp_path / "a.parquet")
    table = pq.read_table(path)
    pq.write_table(table.drop(["user_id", "jpg_1"]), tmp_path / "b.parquet")
    _no_decoding(monkeypatch)
    with pytest.raises(PickAPicFormatError, match=r"b\.parquet.*missing columns \['user_id', 'jpg_1'\]"):
        load_pickapic(tmp_path, progress=False)
    monkeypatch.undo()
    pq.write_table(table.set_column(table.schema.get_field_index("label_1"), "label_1", pa.array([1.0])),
                   tmp_path / "b.parquet")
    with pytest.raises(PickAPicFormatError, match=r"b\.parquet row 0.*\(1\.0, 1\.0\)"):
        load_pickapic(tmp_path, progress=False)


def test_pickapic_fixture_has_the_card_schema(tmp_path):
    datasets = pytest.importorskip("datasets")
    path = write_pickapic([_pair(0), _pair(1, (0.5, 0.5))], tmp_path / "validation_unique.parquet")
    ds = datasets.Dataset.from_parquet(str(path), cache_dir=str(tmp_path / "cache"))
    assert ds.column_names == ["are_different", "best_image_uid", "caption", "created_at", "has_label",
                               "image_0_uid", "image_0_url", "image_1_uid", "image_1_url", "jpg_0", "jpg_1",
                               "label_0", "label_1", "model_0", "model_1", "ranking_id", "user_id",
                               "num_example_per_prompt", "__index_level_0__"]
    assert ds["label_0"] == [1.0, 0.5] and ds["num_example_per_prompt"] == [2, 2]
    assert Image.open(io.BytesIO(ds[0]["jpg_0"])).format == "JPEG"


def test_imagerewarddb_train_split_trains_the_ranking_reward():
    """The fixture's train split → ``ranking_inputs`` → ``fit_ranking_reward``: the reward learns the release's
    order (every training pair, the loss falling), images resized to the one size the batch stacks."""
    import torch

    from feedbacklab.datasets import load_imagerewarddb, ranking_inputs
    from feedbacklab.rewards import RankingTrainConfig, fit_ranking_reward, load_reward

    fixture = Path(__file__).parent / "fixtures" / "imagerewarddb"
    groups = load_imagerewarddb(fixture, split="train", progress=False)
    assert [g.prompt_id for g in groups] == [f"fixture-train-{g:04d}" for g in range(4)]
    rankings, images = ranking_inputs(groups, size=48)
    assert len(rankings) == 4 and set(images) == {i for r in rankings for i in r.item_ids}
    img = images[groups[0].item_ids[0]]
    assert img.shape == (3, 48, 48) and img.dtype == torch.float32 and 0 <= img.min() and img.max() <= 1
    same = ranking_inputs(groups[:1], size=32)[1][groups[0].item_ids[0]]  # the stored size: no resampling
    assert torch.equal(same, torch.from_numpy(groups[0].images[0] / np.float32(255)).permute(2, 0, 1))
    reward = load_reward("imagereward", device="cpu")
    hist = fit_ranking_reward(reward, rankings, images, RankingTrainConfig(epochs=30, learning_rate=3e-3, seed=0),
                              progress=False)
    assert hist[-1]["pair_accuracy"] == 1.0 and hist[-1]["loss"] < hist[0]["loss"] and reward.config.std > 0
    with pytest.raises(ImageRewardDBFormatError, match="without images"):
        ranking_inputs(load_imagerewarddb(fixture, split="train", load_images=False, progress=False), size=32)
    with pytest.raises(ValueError, match="positive"):
        ranking_inputs(groups, size=0)
