"""The annotation app in a real browser: Voilà serves it on localhost, headless Debian Chromium clicks a label and a
point on the image, and the store receives the records."""
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from feedbacklab.feedback import BinaryLabel, PointAnnotation
from feedbacklab.widgets import AnnotationStore, save_task, task_from_arrays

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "apps" / "annotate.ipynb"


def _need_browser():
    if Path(CHROMIUM).is_file():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but no Chromium at {CHROMIUM}: .ci/run must apt-get install chromium")
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium); this test never skips under CI=true")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(notebook: Path, env: dict, cwd: Path):
    """Start Voilà on a free localhost port; (process, url) once it answers."""
    port = _free_port()
    voila = Path(sys.executable).with_name("voila")
    proc = subprocess.Popen([str(voila), str(notebook), f"--port={port}", "--no-browser", "--Voila.ip=127.0.0.1"],
                            env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(120):
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    pytest.fail(f"Voilà did not answer on {url}: {proc.stdout.read().decode()[-2000:]}")


@pytest.fixture
def served_app(tmp_path):
    _need_browser()
    pytest.importorskip("playwright.sync_api")
    img = np.zeros((64, 64, 3), np.uint8)
    img[16:48, 16:48] = (220, 40, 40)
    task = save_task(task_from_arrays("browser", ["binary", "points"], ["a red square", "a red square"], [img, img]),
                     tmp_path / "task.json")
    store = tmp_path / "annotations.db"
    env = dict(os.environ, FEEDBACKLAB_TASK=str(task), FEEDBACKLAB_STORE=str(store), FEEDBACKLAB_ANNOTATOR="web",
               OMP_NUM_THREADS="1")
    proc, url = _serve(NOTEBOOK, env, NOTEBOOK.parent)
    yield url, store
    proc.terminate()
    proc.wait(timeout=20)


def test_click_a_label_and_a_point_in_chromium(served_app, tmp_path):
    from playwright.sync_api import sync_playwright

    url, store = served_app
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1000, "height": 900})
        page.goto(url, timeout=120_000)
        page.get_by_role("button", name="good: matches the prompt").click(timeout=120_000)
        image = page.locator(".widget-image").first
        box = image.bounding_box()
        image.click(position={"x": box["width"] / 2, "y": box["height"] / 4})  # image pixel (32, 16)
        page.wait_for_timeout(500)
        page.screenshot(path=str(tmp_path / "annotation_app.png"))
        page.get_by_role("button", name="Confirm & next").click()
        page.get_by_text("1 / 2 done").wait_for(timeout=30_000)
        browser.close()
    with AnnotationStore(store) as s:
        recs = s.records("browser")
    assert BinaryLabel("web", "item0000", "a red square", 1) in recs
    (pts,) = [r for r in recs if isinstance(r, PointAnnotation) and r.region == "implausible"]
    assert len(pts.points) == 1 and abs(pts.points[0][0] - 32) <= 2 and abs(pts.points[0][1] - 16) <= 2
    assert (tmp_path / "annotation_app.png").stat().st_size > 0


def test_inspector_and_best_of_n_respond_in_chromium(tmp_path):
    """90_explore (smoke sizes, demo bundles: its copy writes under tmp_path) served by Voilà: the inspector's next
    button moves to another item and the best-of-n browser's prompt menu changes its grid; a screenshot of each."""
    _need_browser()
    pytest.importorskip("playwright.sync_api")
    from playwright.sync_api import sync_playwright

    nb_dir = tmp_path / "notebooks"
    nb_dir.mkdir()
    notebook = shutil.copy(NOTEBOOK.parents[1] / "90_explore.ipynb", nb_dir)
    env = dict(os.environ, FEEDBACKLAB_PROFILE="smoke", OMP_NUM_THREADS="1")
    proc, url = _serve(Path(notebook), env, nb_dir)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1100, "height": 1000})
            page.goto(url, timeout=120_000)
            next_button = page.get_by_role("button", name="next ▶")
            next_button.wait_for(timeout=120_000)
            inspector = page.locator(".widget-vbox", has=next_button).first
            status = inspector.get_by_text(" match").first
            before = status.inner_text()
            inspector.screenshot(path=str(tmp_path / "heatmap_inspector.png"))  # the item with the strongest map
            next_button.click()
            page.wait_for_function("s => !document.body.innerText.includes(s)", arg=before, timeout=30_000)
            assert status.inner_text().startswith("item ") and status.inner_text() != before

            menu = page.locator("select").first  # the best-of-n browser's prompt menu comes first
            browser_box = page.locator(".widget-vbox", has=menu).first
            tiles = browser_box.locator("figure img")
            grid = lambda: [tiles.nth(k).get_attribute("src") for k in range(tiles.count())]  # noqa: E731
            grid_before = grid()
            chosen = menu.evaluate("e => e.selectedIndex")
            menu.select_option(index=(chosen + 1) % menu.locator("option").count())
            for _ in range(100):  # the kernel redraws the grid for the other prompt
                if grid() != grid_before:
                    break
                page.wait_for_timeout(100)
            assert grid() != grid_before
            browser_box.screenshot(path=str(tmp_path / "best_of_n_browser.png"))
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    for name in ("heatmap_inspector.png", "best_of_n_browser.png"):
        assert (tmp_path / name).stat().st_size > 0
