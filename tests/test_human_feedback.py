"""People's answers from the annotation store become the feedback sets the notebooks train on."""
import numpy as np
import pytest

from feedbacklab import world
from feedbacklab.feedback import BinaryLabel, Ranking, make_panel
from feedbacklab.feedback_sets import FeedbackSet, human_feedback_set, judge_record, rich_feedback
from feedbacklab.widgets.store import AnnotationStore
from feedbacklab.widgets.task import demo_task, load_task


def _store_panel_answers(tmp_path, kinds, per_record):
    """A demo task; each simulated annotator's records stored as if that person had confirmed them in the app."""
    task = load_task(demo_task(tmp_path / "task", kinds, n=6))
    panel = make_panel(3, seed=1)
    store_path = tmp_path / "store.sqlite"
    with AnnotationStore(store_path) as store:
        for item in task.items:
            judgements = [world.judge(item.prompt, task.image(item, k)) for k in range(len(item.images))]
            for records in per_record(panel, item, judgements):
                store.confirm(task.name, item.item_id, records[0].annotator_id, records)
    return task, store_path, panel


def test_binary_labels_are_the_majority_of_the_stored_answers(tmp_path):
    def answers(panel, item, js):
        return [[BinaryLabel(f"person{a}", item.image_ids[0], item.prompt, b.label)]
                for a, b in enumerate(panel.binary(js[0], item.item_id))]

    task, store_path, panel = _store_panel_answers(tmp_path, ("binary",), answers)
    fs, records = human_feedback_set(task, store_path, "binary")
    assert isinstance(fs, FeedbackSet) and len(fs) == len(task.items) == len(records) / 3
    for item, rec, image in zip(task.items, fs.records, fs.images):
        expected = [b.label for b in panel.binary(world.judge(item.prompt, image), item.item_id)]
        assert rec["item_id"] == item.item_id and rec["labels"] == expected
        assert rec["label"] == int(sum(expected) >= 2)
        assert rec["aligned"] == judge_record(item.prompt, image)["aligned"]  # the oracle's truth, for evaluation
    np.testing.assert_array_equal(fs.images[0], task.image(task.items[0]))
    assert fs.labels.shape == fs.truth.shape == (len(task.items),)


def test_rankings_come_back_over_image_ids_with_a_better_half_label(tmp_path):
    def answers(panel, item, js):
        return [[r] for r in panel.rank(js, list(item.image_ids))]

    task, store_path, _ = _store_panel_answers(tmp_path, ("ranking",), answers)
    fs, rankings = human_feedback_set(load_task(tmp_path / "task" / "task.json"), store_path, "ranking")
    assert len(fs) == 3 * len(task.items) and all(isinstance(r, Ranking) for r in rankings)
    assert {i for r in rankings for i in r.item_ids} == {r["item_id"] for r in fs.records}
    for g in range(len(task.items)):  # groups of three: the image everyone ranked first is labelled 1
        group = fs.records[3 * g: 3 * g + 3]
        mine = [r for r in rankings if r.item_ids[0] == group[0]["item_id"]]
        mean_rank = {i: np.mean([r.ranks[r.item_ids.index(i)] for r in mine]) for i in mine[0].item_ids}
        best = min(mean_rank, key=mean_rank.get)
        assert next(r for r in group if r["item_id"] == best)["label"] == 1
        assert sum(r["label"] for r in group) == 2  # the better half of three: ranks 1 and 2
        assert [r["sample"] for r in group] == [0, 1, 2] and len({r["prompt_index"] for r in group}) == 1


def test_rich_records_from_people_consolidate_like_the_panels(tmp_path):
    def answers(panel, item, js):
        records = panel.rich(js[0], item.item_id)
        by_person = {}
        for r in records:
            by_person.setdefault(r.annotator_id, []).append(r)
        return list(by_person.values())

    task, store_path, panel = _store_panel_answers(tmp_path, ("likert", "points", "keywords"), answers)
    fs, records = human_feedback_set(task, store_path, "rich")
    from_people, _ = rich_feedback(fs, records=records)
    from_panel, _ = rich_feedback(fs, panel)
    assert [lab.item_id for lab in from_people] == [lab.item_id for lab in from_panel] == [i.item_id for i in task.items]
    for a, b in zip(from_people, from_panel):
        assert a.scores == b.scores and a.keywords == b.keywords and a.extra == b.extra
        for kind in a.heatmaps:
            np.testing.assert_allclose(a.heatmaps[kind], b.heatmaps[kind])


def test_bad_requests_say_what_is_wrong(tmp_path):
    task = load_task(demo_task(tmp_path / "task", ("binary",), n=2))
    store_path = tmp_path / "store.sqlite"
    with pytest.raises(ValueError, match="no annotation store"):
        human_feedback_set(task, store_path)
    AnnotationStore(store_path).close()
    with pytest.raises(ValueError, match="holds no binary answers"):
        human_feedback_set(task, store_path)
    with pytest.raises(ValueError, match="needs \\['ranking'\\]"):
        human_feedback_set(task, store_path, "ranking")
    with pytest.raises(ValueError, match="unknown feedback 'pairs'"):
        human_feedback_set(task, store_path, "pairs")
    with pytest.raises(ValueError, match="not both"):
        rich_feedback(FeedbackSet(np.zeros((0, 8, 8, 3), np.uint8), []), panel=make_panel(1), records=[])


def _peoples_task(tmp_path, kind):
    """A task over renders of seen-split prompts in the notebook's families, answered by simulated 'people'."""
    from feedbacklab import evaluation as ev
    from feedbacklab.widgets.task import save_task, task_from_arrays

    families = ("attribute",) if kind == "binary" else ("attribute", "composition", "spatial")
    prompts = [p for f in families for p in ev.eval_prompts(2, "seen", seed=0, family=f,
                                                            **({"shape": "circle"} if kind == "binary" else {}))]
    prompts = prompts * 2  # two images per prompt, as the notebooks sample several
    images = [world.render(world.parse(p), size=64, seed=n)[0] for n, p in enumerate(prompts)]
    kinds = ["binary"] if kind == "binary" else ["likert", "points", "keywords"]
    task_path = save_task(task_from_arrays("people", kinds, prompts, images), tmp_path / "task.json")
    task = load_task(task_path)
    panel = make_panel(3, seed=3)
    with AnnotationStore(tmp_path / "people.sqlite") as store:
        for n, item in enumerate(task.items):
            if kind == "binary":
                answers = {p: [BinaryLabel(p, item.item_id, item.prompt, n % 2)] for p in ("ann", "bob")}
            else:
                answers = {}
                for r in panel.rich(world.judge(item.prompt, task.image(item)), item.item_id):
                    answers.setdefault(r.annotator_id, []).append(r)
            for person, records in answers.items():
                store.confirm(task.name, item.item_id, person, records)
    return task, task_path, tmp_path / "people.sqlite"


@pytest.mark.parametrize("notebook, kind, task_file", [("10_lee2023_reward_weighted", "binary", "feedback_task.json"),
                                                       ("30_richhf_rahf", "rich", "rich_task.json")])
def test_notebooks_train_on_peoples_feedback(tmp_path, monkeypatch, notebook, kind, task_file):
    """Notebooks 10 and 30 (smoke sizes) with ``human_task`` / ``human_store`` train on the people's answers.

    Notebook 20's ranking branch (four lines: ``human_feedback_set(..., "ranking")`` in place of the panel's
    rankings) is left to the unit test above, to keep ``make test`` within its 15 minutes."""
    import json
    from pathlib import Path

    import papermill as pm

    task, task_path, store_path = _peoples_task(tmp_path, kind)
    monkeypatch.setenv("FEEDBACKLAB_PROFILE", "smoke")  # the kernel inherits it: smoke sizes
    nb = Path(__file__).resolve().parents[1] / "notebooks" / f"{notebook}.ipynb"
    out = tmp_path / "report"
    pm.execute_notebook(str(nb), str(tmp_path / "out.ipynb"), cwd=str(nb.parent), kernel_name="feedbacklab",
                        progress_bar=False, parameters={"output_dir": str(out), "human_task": str(task_path),
                                                        "human_store": str(store_path)})
    metrics = json.loads((out / "metrics.json").read_text())["metrics"]
    n_images = sum(len(i.images) for i in task.items)
    if kind == "binary":
        assert metrics["n_feedback_images"] == n_images and metrics["label_rate"] == pytest.approx(0.5)
    else:
        assert metrics["n_train"] == len(task.items)
    rewritten = load_task(out / "annotation" / task_file)  # the run's own task: the same images, ready to annotate
    assert sum(len(i.images) for i in rewritten.items) == n_images
