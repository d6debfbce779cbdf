"""The job console (``GET /``) in a real headless Chromium, against the API, the S3 server and a worker: each kind of
result drawn from what ``GET /v1/jobs/{id}`` returns, problems shown, untrusted text kept as text, and no error in
the browser's console (Content-Security-Policy violations show up there)."""

import base64
import io
import math
import re
import shutil
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from devtools.media import encode_audio, picture, speech
from tests.api.conftest import PARKED, TOKENS, bearer
from tests.support.settings import model_name

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
if CHROMIUM is None or CHROMEDRIVER is None:
    pytest.skip(
        "the console tests need Debian's chromium and chromium-driver (`make system-deps` installs them)",
        allow_module_level=True,
    )

ALPHA = TOKENS["alpha"][0]
JOB_TIMEOUT_S = 120
EXPECTED = ("status of 401",)
"""Browser console errors that are no fault: the page first asks for the models with the token an earlier test left
(or none), and one test enters a refused token."""


@pytest.fixture(scope="module")
def console_url(api_url: str, worker) -> str:
    """The API serving the console, and a worker to run its jobs. Uploads go from the browser straight to the S3
    server: it answers the CORS preflight of a (SigV4) presigned PUT, and the console's CSP allows its origin."""
    return api_url


@pytest.fixture(scope="module")
def driver() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1024",
        "--mute-audio",
    ):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: webdriver.Chrome, allowed: tuple[str, ...] = ()) -> list[str]:
    """The browser console's SEVERE messages since the last call, but those containing one of ``allowed``."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and not any(text in entry["message"] for text in allowed)
    ]


class Console:
    """The console page in the browser, and what it shows."""

    def __init__(self, driver: webdriver.Chrome, url: str) -> None:
        self.driver, self.url = driver, url
        self.expected = EXPECTED
        """Browser console errors that are no fault in this test."""

    def wait(self, condition: Any, timeout: float = 30) -> Any:
        return WebDriverWait(self.driver, timeout).until(condition)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def open(self, token: str = ALPHA) -> str:
        """Load the page, enter ``token``, and wait for the models (``ready``) or a problem (``error``)."""
        self.driver.get(self.url)
        field = self.wait(lambda d: d.find_element(By.ID, "token"))
        field.clear()
        field.send_keys(token, Keys.ENTER)
        self.wait(lambda d: d.find_element(By.ID, "model").get_attribute("data-state") in ("ready", "error"))
        assert not console_errors(self.driver, EXPECTED)
        return self.find("#model").get_attribute("data-state")

    def choose(self, model: str) -> None:
        Select(self.find("#model")).select_by_value(model)
        self.wait(lambda d: d.find_element(By.ID, "job-form").get_attribute("data-model") == model)

    def type_text(self, text: str) -> None:
        box = self.find("#text-input")
        box.clear()
        box.send_keys(text)

    def pick_file(self, path: Path) -> None:
        self.find("#file-input").send_keys(str(path))

    def parameter(self, name: str, value: str) -> None:
        control = self.find(f"#param-{name}")
        if control.tag_name == "select":
            Select(control).select_by_visible_text(value)
        else:
            control.clear()
            control.send_keys(value)

    def run(self) -> str:
        """Submit the form and wait for the result to be drawn; the job's final state."""
        self.find("#submit").click()
        rendered = self.wait(
            lambda d: d.find_element(By.ID, "result").get_attribute("data-rendered"), timeout=JOB_TIMEOUT_S
        )
        if rendered != "succeeded":
            error = self.find("#error").get_attribute("textContent")
            pytest.fail(f"the console ended with {rendered}: {error}")
        return rendered

    def jobs(self) -> list[dict[str, Any]]:
        """The jobs the console ran last, as ``GET /v1/jobs/{id}`` returns them."""
        ids = self.find("#result").get_attribute("data-jobs").split(",")
        views = [httpx.get(f"{self.url}/v1/jobs/{job_id}", headers=bearer("alpha"), timeout=30) for job_id in ids]
        assert all(view.status_code == 200 for view in views)
        return [view.json() for view in views]

    def rect(self, element: WebElement) -> dict[str, float]:
        return self.js(
            "const r = arguments[0].getBoundingClientRect(); return {x: r.x, y: r.y, w: r.width, h: r.height}", element
        )


@pytest.fixture
def console(driver: webdriver.Chrome, console_url: str) -> Iterator[Console]:
    """The console, and after the test no SEVERE message in the browser's console (CSP violations, errors)."""
    driver.get_log("browser")  # from a clean log
    page = Console(driver, console_url)
    yield page
    assert not console_errors(driver, page.expected)


def ranked(result: Any) -> list[dict[str, Any]]:
    """A classification result as [{label, score}] (a list, a list of one list, or zero-shot's labels/scores)."""
    if isinstance(result, dict) and "labels" in result:
        return [
            {"label": label, "score": score} for label, score in zip(result["labels"], result["scores"], strict=True)
        ]
    if len(result) == 1 and isinstance(result[0], list):
        return result[0]
    return result


def check_bars(console: Console, items: list[dict[str, Any]]) -> None:
    """One bar per label, in the result's order, as wide (a share of its track) as the label's score."""
    bars = console.all("#result .bar")
    assert len(bars) == len(items) > 0
    assert [bar.get_attribute("data-label") for bar in bars] == [item["label"] for item in items]
    shares = [console.rect(bar)["w"] / console.rect(bar.find_element(By.XPATH, ".."))["w"] for bar in bars]
    for share, item in zip(shares, items, strict=True):
        assert share == pytest.approx(item["score"], abs=0.01)
    by_score = sorted(range(len(items)), key=lambda index: items[index]["score"], reverse=True)
    assert [shares[index] for index in by_score] == sorted(shares, reverse=True)
    values = [element.text for element in console.all("#result .bar-value")]
    assert values == [f"{item['score'] * 100:.1f}%" for item in items]


def test_the_console_is_one_page_of_its_own_files_with_no_inline_code(http: httpx.Client) -> None:
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "'unsafe-inline'" not in policy
    html = page.text
    assert re.findall(r"<script\b[^>]*>", html) == ['<script type="module" src="/console/console.js">']
    assert not re.search(r"<style\b|\sstyle=|\son[a-z]+=", html, re.IGNORECASE)
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", html)  # nothing from another origin
    for name, kind in (("console.js", "javascript"), ("console.css", "text/css")):
        served = http.get(f"/console/{name}")
        assert served.status_code == 200 and kind in served.headers["content-type"]
        assert served.headers["content-security-policy"] == policy
    script = (files("pipeq.api") / "console" / "console.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function", script)


@pytest.mark.slow
def test_text_classification_draws_a_bar_per_label(console: Console) -> None:
    assert console.open() == "ready"
    console.choose(model_name("text-classification"))
    console.type_text("what a lovely day")
    console.parameter("top_k", "2")
    console.run()
    [job] = console.jobs()
    check_bars(console, ranked(job["result"]))
    assert console.find("#state").text.lower() == "succeeded"
    assert console.find("#progress").get_attribute("value") == "1"


@pytest.mark.slow
def test_zero_shot_labels_from_a_comma_separated_field_come_back_as_bars(console: Console) -> None:
    console.open()
    console.choose(model_name("zero-shot-classification"))
    console.type_text("the match went to extra time")
    console.parameter("candidate_labels", "sports, politics , cooking")
    console.run()
    [job] = console.jobs()
    items = ranked(job["result"])
    assert sorted(item["label"] for item in items) == ["cooking", "politics", "sports"]
    check_bars(console, items)


@pytest.mark.slow
def test_speech_is_transcribed_and_its_chunks_seek_the_uploaded_audio(console: Console, tmp_path: Path) -> None:
    audio = tmp_path / "hello.wav"
    audio.write_bytes(encode_audio(speech("hello world"), "WAV"))
    console.open()
    console.choose(model_name("automatic-speech-recognition"))
    console.pick_file(audio)
    choices = [option.text for option in Select(console.find("#param-return_timestamps")).options]
    # a CTC model takes "char" or "word"; the random tiny model's transcript has no spaces: "word" gives one chunk
    console.parameter("return_timestamps", "char" if "char" in choices else "true")
    console.run()
    [job] = console.jobs()
    result = job["result"]
    assert console.find("#result .transcript").get_attribute("textContent") == result["text"]
    player = console.find("#result audio")
    assert player.get_attribute("src").startswith("blob:")
    chunks = console.all("#result .chunk")
    expected = result.get("chunks") or []
    assert len(chunks) == len(expected)
    for chunk, piece in zip(chunks, expected, strict=True):
        assert float(chunk.get_attribute("data-start")) == pytest.approx(piece["timestamp"][0])
        assert chunk.text.startswith(piece["text"].strip())
    if chunks:
        latest = max(chunks, key=lambda chunk: float(chunk.get_attribute("data-start")))
        start = float(latest.get_attribute("data-start"))
        assert start > 0 or len(chunks) == 1
        latest.click()
        position = console.js("return arguments[0].currentTime", player)
        assert position == pytest.approx(start, abs=0.3)
        assert "playing" in latest.get_attribute("class")


@pytest.mark.slow
def test_object_detection_draws_boxes_over_the_uploaded_image(console: Console, tmp_path: Path) -> None:
    image = tmp_path / "shapes.png"
    image.write_bytes(picture(160, 120))
    console.open()
    console.choose(model_name("object-detection"))
    console.pick_file(image)
    console.parameter("threshold", "0")
    console.run()
    [job] = console.jobs()
    detections = job["result"]
    boxes = console.all("#result .box")
    assert len(boxes) == len(detections) > 0
    shown = console.rect(console.find("#result .figure img"))
    assert shown["w"] > 160  # drawn larger than the picture: the boxes scale with it
    for box in boxes:
        detection = detections[int(box.get_attribute("data-index"))]
        assert box.get_attribute("data-label") == detection["label"]
        place, corners = console.rect(box), detection["box"]
        assert (place["x"] - shown["x"]) / shown["w"] == pytest.approx(corners["xmin"] / 160, abs=0.01)
        assert (place["y"] - shown["y"]) / shown["h"] == pytest.approx(corners["ymin"] / 120, abs=0.01)
        assert place["w"] / shown["w"] == pytest.approx((corners["xmax"] - corners["xmin"]) / 160, abs=0.01)
        assert place["h"] / shown["h"] == pytest.approx((corners["ymax"] - corners["ymin"]) / 120, abs=0.01)
        assert (
            box.find_element(By.CSS_SELECTOR, ".box-label").get_attribute("textContent").startswith(detection["label"])
        )


@pytest.mark.slow
def test_segmentation_masks_are_tinted_overlays_on_the_uploaded_image(console: Console, tmp_path: Path) -> None:
    image = tmp_path / "shapes.png"
    image.write_bytes(picture(96, 64, seed=3))
    console.open()
    console.choose(model_name("image-segmentation"))
    console.pick_file(image)
    console.run()
    [job] = console.jobs()
    segments = job["result"]
    masks = console.all("#result canvas.mask")
    assert len(masks) == len(segments)
    assert len(console.all("#result .legend button")) == len(segments)
    shown = console.rect(console.find("#result .figure img"))
    for canvas, segment in zip(masks, segments, strict=True):
        place = console.rect(canvas)
        assert (place["x"], place["y"], place["w"], place["h"]) == pytest.approx(
            (shown["x"], shown["y"], shown["w"], shown["h"]), abs=1
        )
        mask = Image.open(io.BytesIO(base64.b64decode(segment["mask"]["data"]))).convert("L")
        inside = sum(1 for value in mask.getdata() if value > 127)
        painted = console.js(
            "const c = arguments[0]; const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
            " let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return [c.width, c.height, n];",
            canvas,
        )
        assert painted == [mask.width, mask.height, inside]


@pytest.mark.slow
def test_embeddings_of_several_lines_are_ranked_by_similarity_to_the_first(console: Console) -> None:
    lines = ["the cat sat on the mat", "a cat was sitting on a mat", "quarterly revenue grew by four percent"]
    console.open()
    console.choose(model_name("feature-extraction"))
    console.type_text("\n".join(lines) + "\n\n")
    console.run()
    jobs = console.jobs()
    assert len(jobs) == 3
    vectors = [[sum(column) / len(job["result"][0]) for column in zip(*job["result"][0], strict=True)] for job in jobs]

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))

    expected = sorted(((cosine(vectors[0], vectors[i]), lines[i]) for i in (1, 2)), reverse=True)
    entries = console.all("#result .similarity")
    assert len(entries) == 2
    shown = [
        (
            float(entry.find_element(By.CSS_SELECTOR, ".similarity-score").text),
            entry.find_element(By.CSS_SELECTOR, ".similarity-text").text,
        )
        for entry in entries
    ]
    assert [score for score, _ in shown] == sorted((score for score, _ in shown), reverse=True)
    assert shown == [(round(score, 3), text) for score, text in expected]


@pytest.mark.slow
def test_a_queued_job_shows_its_state_and_can_be_canceled(console: Console) -> None:
    console.open()
    console.choose(PARKED)  # no worker serves its queue: the job stays queued
    console.type_text("never run")
    console.find("#submit").click()
    console.wait(lambda d: d.find_element(By.ID, "state").get_attribute("data-state") == "queued")
    assert console.js("return document.getElementById('progress').matches(':indeterminate')")  # while it waits
    cancel = console.find("#cancel")
    assert cancel.is_displayed() and console.find("#submit").get_attribute("disabled") is not None
    cancel.click()
    assert console.wait(lambda d: d.find_element(By.ID, "result").get_attribute("data-rendered")) == "canceled"
    assert console.find("#state").get_attribute("data-state") == "canceled"
    assert not cancel.is_displayed() and console.find("#submit").get_attribute("disabled") is None
    [job] = console.jobs()
    assert job["state"] == "canceled"


@pytest.mark.slow
def test_a_refused_token_shows_the_problem_detail(console: Console) -> None:
    refused = httpx.get(f"{console.url}/v1/models", headers={"Authorization": "Bearer pq_not-a-token"})
    assert refused.status_code == 401
    assert console.open("pq_not-a-token") == "error"
    error = console.wait(lambda d: d.find_element(By.ID, "error").is_displayed() and d.find_element(By.ID, "error"))
    assert refused.json()["detail"] in error.text
    assert console.find("#submit").get_attribute("disabled") is not None
    console.open()  # the next tests' token
    assert not console.find("#error").is_displayed()


@pytest.mark.slow
def test_a_refused_upload_shows_the_problem_and_its_fields(console: Console, tmp_path: Path) -> None:
    console.expected += ("status of 422",)
    odd = tmp_path / "shapes.bin"  # no image type: application/octet-stream, which uploads do not accept
    odd.write_bytes(picture(32, 24))
    console.open()
    console.choose(model_name("image-classification"))
    console.pick_file(odd)
    console.find("#submit").click()
    assert console.wait(lambda d: d.find_element(By.ID, "result").get_attribute("data-rendered")) == "error"
    error = console.find("#error").text
    assert "uploads of application/octet-stream are not accepted" in error
    assert "content_type: not an accepted upload type" in error
    assert console.find("#state").get_attribute("data-state") == "error"


@pytest.mark.slow
def test_markup_in_the_input_is_shown_as_text(console: Console) -> None:
    console.open()
    console.choose(model_name("text-classification"))
    console.type_text("<b>x</b><img src=x id=injected>")
    console.run()
    assert "<b>x</b><img src=x id=injected>" in console.find("#summary").get_attribute("textContent")
    assert console.js("return document.querySelectorAll('b, #injected').length") == 0
