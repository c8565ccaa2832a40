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


@pytest.fixture
def served_app(tmp_path):
    _need_browser()
    pytest.importorskip("playwright.sync_api")
    img = np.zeros((64, 64, 3), np.uint8)
    img[16:48, 16:48] = (220, 40, 40)
    task = save_task(task_from_arrays("browser", ["binary", "points"], ["a red square", "a red square"], [img, img]),
                     tmp_path / "task.json")
    store = tmp_path / "annotations.db"
    port = _free_port()
    env = dict(os.environ, FEEDBACKLAB_TASK=str(task), FEEDBACKLAB_STORE=str(store), FEEDBACKLAB_ANNOTATOR="web",
               OMP_NUM_THREADS="1")
    voila = Path(sys.executable).with_name("voila")
    proc = subprocess.Popen([str(voila), str(NOTEBOOK), f"--port={port}", "--no-browser", "--Voila.ip=127.0.0.1"],
                            env=env, cwd=NOTEBOOK.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    for _ in range(120):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail(f"Voilà did not answer on {url}: {proc.stdout.read().decode()[-2000:]}")
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
