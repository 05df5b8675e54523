"""A real browser on the --tiny demo: Debian's chromium driven by Playwright loads the page, uploads a
vendored face, clicks Generate and sees the gallery. The screenshot is kept in tests/artifacts/.

Skips when chromium or the ``playwright`` package is absent (CI installs both:
``apt-get install -y chromium`` and ``pip install playwright``; no Playwright browser download).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="chromium is not installed (apt-get install -y chromium)")
def test_upload_generate_and_see_the_gallery(faces_dir):
    import torch

    from idgen.demo import ModelHub, ModelSettings, build_demo, launch

    torch.set_num_threads(1)
    demo = build_demo(ModelHub(ModelSettings(tiny=True)))
    launch(demo, prevent_thread_lock=True, quiet=True)
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1280, "height": 1400})
            page.goto(demo.local_url)
            page.get_by_text("Tiny random models.").first.wait_for(timeout=60_000)  # the label is on the page
            page.locator("#photos input[type=file]").set_input_files(str(faces_dir / "Aaron_Peirsol_0001.jpg"))
            page.locator("#photos").get_by_text("Aaron_Peirsol_0001").first.wait_for(timeout=30_000)  # name and extension are separate elements
            page.locator("#generate").click()
            page.locator("#gallery img").nth(1).wait_for(timeout=120_000)  # 2 images by default
            page.screenshot(path=str(ARTIFACTS / "demo_generate.png"), full_page=True)
            count = page.locator("#gallery img").count()
            browser.close()
    finally:
        demo.close()
    assert count >= 2
    assert (ARTIFACTS / "demo_generate.png").read_bytes()[:4] == b"\x89PNG"
