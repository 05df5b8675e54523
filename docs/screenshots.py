"""Screenshots of the demo for the docs: starts ``python app.py`` (the embedded mini model by default,
offline, on 127.0.0.1 and a free port), drives every tab in headless Chromium with Playwright and the
vendored photos in ``tests/data/faces``, waits for each tab's real output and saves
``docs/images/demo-<tab>.png`` (the tab's panel, downscaled and palette-compressed).

    python docs/screenshots.py [--model mini] [--chromium /usr/bin/chromium] [--output-dir docs/images]

Needs Chromium and the ``playwright`` package (``pip install -e ".[browser-tests]"``, no Playwright
browser download). The long tabs run with small settings: Dataset 4 identities × 3 images, Forget →
Recogniser on that dataset or on ``--forget-data`` (allowed with ``app.py --allow-folder``; 30 training epochs,
3 forgetting epochs), Forget → Generator 20
forgetting steps. A tab that shows an error instead of its output stops the script with the page's
message and the end of the demo's log.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT / "tests" / "data" / "faces"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: Width of the saved PNGs (the page is drawn at 1280 px) and the most colours they keep.
WIDTH, COLOURS = 960, 256
MAX_BYTES = 200_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_demo(model: str, port: int, log, allow_folder: Path | None = None) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    allowed = ["--allow-folder", str(allow_folder)] if allow_folder else []
    return subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--model", model, "--host", "127.0.0.1",
                             "--port", str(port), *allowed], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_for(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the demo exited with status {server.returncode} before serving {url}")
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"the demo did not answer at {url} within {timeout:.0f} s")


def save(panel, path: Path) -> None:
    """Screenshot ``panel`` (a locator), downscale it to WIDTH and store it as a palette PNG; a JPEG
    when even that is above MAX_BYTES."""
    raw = path.with_suffix(".raw.png")
    panel.screenshot(path=str(raw))
    image = Image.open(raw).convert("RGB")
    raw.unlink()
    if image.width > WIDTH:
        image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    image.quantize(COLOURS, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(path, optimize=True)
    if path.stat().st_size > MAX_BYTES:
        path.unlink()
        path = path.with_suffix(".jpg")
        image.save(path, quality=80, optimize=True)
    print(f"wrote {path} ({image.width}×{image.height}, {path.stat().st_size // 1024} KB)")


def panel_of(page, *tabs: str):
    """Click the tab(s) ``tabs`` (outer first) and return the innermost visible tab panel."""
    for name in tabs:
        page.get_by_role("tab", name=name, exact=True).click()
    panel = page.get_by_role("tabpanel").filter(visible=True).last
    panel.wait_for()
    return panel


def upload(panel, *photos: str) -> None:
    """Put ``photos`` (names in tests/data/faces) into the first empty file field of ``panel`` (a
    Gradio file field drops its ``<input type=file>`` once it holds a file)."""
    panel.locator("input[type=file]").first.set_input_files([str(FACES / p) for p in photos])
    panel.get_by_text(Path(photos[-1]).stem).first.wait_for(timeout=60_000)   # the page splits off ".jpg"


def set_number(panel, label: str, value) -> None:
    """Type ``value`` into the number box of the slider labelled ``label``."""
    box = panel.get_by_label(f"number input for {label}", exact=True)
    box.fill(str(value))
    box.press("Enter")


def wait_output(page, output, timeout_ms: int) -> None:
    """Wait for ``output`` to appear; fail at once, with the message, when the page shows an error."""
    errors = page.locator(".toast-body")
    deadline = time.time() + timeout_ms / 1000
    while time.time() < deadline:
        if output.count() and output.first.is_visible():
            return
        if errors.count():
            raise RuntimeError(f"the demo showed an error: {errors.first.inner_text()!r}")
        page.wait_for_timeout(500)
    raise TimeoutError(f"no output after {timeout_ms / 1000:.0f} s: {output}")


def generate(page, timeout_ms: int, state: dict):
    panel = panel_of(page, "Generate")
    upload(panel, "Aaron_Peirsol_0001.jpg")
    panel.locator("#generate").click()
    wait_output(page, panel.get_by_text("image(s) of"), timeout_ms)
    panel.locator("#gallery img").nth(1).wait_for(timeout=timeout_ms)
    return panel


def mix(page, timeout_ms: int, state: dict):
    panel = panel_of(page, "Mix")
    upload(panel, "Aaron_Peirsol_0001.jpg")
    upload(panel, "Angelina_Jolie_0001.jpg")
    panel.get_by_role("button", name="Mix", exact=True).click()
    wait_output(page, panel.get_by_text("similarity to A:"), timeout_ms)
    return panel


def dataset(page, timeout_ms: int, state: dict):
    panel = panel_of(page, "Dataset")
    set_number(panel, "identities", 4)
    set_number(panel, "images per identity", 3)
    panel.get_by_role("button", name="Generate dataset").click()
    wait_output(page, panel.get_by_text("images of"), timeout_ms)
    state["dataset_empty"] = panel.get_by_text("0 images of 0 identities").count() > 0
    return panel


def forget_recogniser(page, timeout_ms: int, state: dict):
    panel = panel_of(page, "Forget", "Recogniser")
    # the allowed folder is the tab's first choice; without one, the Dataset tab chose its dataset
    if not state["forget_data"] and state.get("dataset_empty", True):
        print("skipped Forget → Recogniser: no --forget-data, and the Dataset tab made no images (or did not run)")
        return None
    set_number(panel, "recogniser training epochs", 30)
    set_number(panel, "forgetting epochs", 3)
    panel.get_by_role("button", name="Forget", exact=True).click()
    wait_output(page, panel.locator("table"), timeout_ms)
    panel.locator("img").first.wait_for(timeout=timeout_ms)
    return panel


def forget_generator(page, timeout_ms: int, state: dict):
    panel = panel_of(page, "Forget", "Generator")
    upload(panel, "Angelina_Jolie_0001.jpg")
    set_number(panel, "forgetting steps", 20)
    panel.get_by_role("button", name="Forget in the generator").click()
    wait_output(page, panel.get_by_text("in a copy of the generator"), timeout_ms)
    panel.locator("#forget-renders img").nth(1).wait_for(timeout=timeout_ms)
    return panel


#: File name suffix → the function that drives that tab to its output and returns its panel (None: skipped).
TABS = {"generate": generate, "mix": mix, "dataset": dataset, "forget-recogniser": forget_recogniser,
        "forget-generator": forget_generator}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mini", help="app.py --model (default: the embedded mini model)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    parser.add_argument("--output-dir", default=str(ROOT / "docs" / "images"))
    parser.add_argument("--forget-data", default=None,
                        help="face folder (one sub-folder per person, e.g. ORL) for Forget → Recogniser, instead of "
                             "the Dataset tab's output; the page shows it as TMP/faces")
    parser.add_argument("--tabs", nargs="+", choices=list(TABS), default=list(TABS), help="tabs to shoot (default: all)")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for each tab's output")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with tempfile.NamedTemporaryFile("w+", prefix="idgen-demo-", suffix=".log") as log, \
            tempfile.TemporaryDirectory(prefix="idgen-screenshots-") as tmp:
        forget_data = None
        if args.forget_data:   # a neutral path for the page to show, not the folder's own
            forget_data = Path(tmp) / "faces"
            forget_data.symlink_to(Path(args.forget_data).resolve(), target_is_directory=True)
        server = start_demo(args.model, port, log, forget_data)
        try:
            wait_for(url, server)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=args.chromium, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                page.goto(url)
                page.get_by_text("Identity generator:").wait_for(timeout=60_000)
                state = {"forget_data": forget_data}
                for name in args.tabs:
                    panel = TABS[name](page, int(args.timeout * 1000), state)
                    if panel is not None:
                        save(panel, out / f"demo-{name}.png")
                browser.close()
        except BaseException:
            log.seek(0)
            print("--- the demo's log ---\n" + log.read()[-5000:], file=sys.stderr)
            raise
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
