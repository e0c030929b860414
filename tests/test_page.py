"""The page of `keras-deeplab serve` in a real browser (headless Chromium under Selenium, tests/browser.py):
a real VOC photo chosen, segmented by Google's published MobileNetV2 DeepLabv3 served with `--crf`; the legend,
overlay, time, download, CRF switch and error sentence read back from the page.

Set KERAS_DEEPLAB_PAGE_SCREENSHOT=path.png to keep a screenshot of the page after the photo was chosen.
"""

import base64
import io
import os
import re

import numpy as np
import pytest
from browser import chromium_paths, headless_chromium
from PIL import Image
from serving_models import b64, call, running_serve, shared_path

from keras_deeplab.descriptors import VOC
from keras_deeplab.files import PUBLISHED_MODEL
from keras_deeplab.visualize import class_shares, format_share, overlay

PHOTO = "voc2012_sample/JPEGImages/2007_000032.jpg"  # aeroplanes and people on an airfield, 500 x 281
MAX_PIXELS = 500 * 500  # the photo passes, the same photo at twice its size does not
MAX_BODY_MB = 0.25  # the photo (54 KB) passes, a 600 KB file does not
WAIT_S = 60


def export_published(path: str) -> None:
    from keras_deeplab.importing import import_weights
    from serving.export import export_saved_model

    export_saved_model(import_weights(PUBLISHED_MODEL), path)


@pytest.fixture(scope="module")
def page_server(tmp_path_factory):
    """Root URL of `serve --crf` of the published VOC model (imported, exported once per test run)."""
    chromium_paths()  # found, installed, or the test skipped with the reason, before the model is exported
    base_path = shared_path(tmp_path_factory, "export_published", export_published)
    with running_serve(
        base_path, "--crf", "--max-pixels", str(MAX_PIXELS), "--max-body-mb", str(MAX_BODY_MB), "--quiet"
    ) as url:
        yield url


def served_legend(url: str, photo: bytes, crf: bool) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """(class map, [(name, share)] as the legend should read) from the REST API itself."""
    status, body = call(f"{url}/v1/models/deeplab:predict", {"instances": [b64(photo)], "crf": crf})
    assert status == 200, body
    class_map = np.array(body["predictions"][0]["class_map"])
    return class_map, [(VOC.class_names[index], format_share(share)) for index, share in class_shares(class_map)]


@pytest.mark.slow(26)
def test_choosing_a_real_photo_shows_overlay_legend_time_and_download(page_server, shared_data_dir, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url = page_server
    photo_path = os.path.join(shared_data_dir, PHOTO)
    with open(photo_path, "rb") as file:
        photo = file.read()
    picture = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
    height, width = picture.shape[:2]
    with headless_chromium() as browser:
        browser.get(f"{url}/")
        wait = WebDriverWait(browser, WAIT_S)
        assert browser.find_element(By.ID, "model").text == "deeplab"
        assert browser.find_element(By.ID, "crf-control").is_displayed()  # served with --crf: the switch is there
        assert not browser.find_element(By.ID, "result").is_displayed()

        def legend():
            return [
                (item.find_element(By.CLASS_NAME, "name").text, item.find_element(By.CLASS_NAME, "share").text)
                for item in browser.find_elements(By.CSS_SELECTOR, "#legend li")
            ]

        browser.find_element(By.ID, "file").send_keys(photo_path)
        wait.until(lambda _: browser.find_element(By.ID, "result").is_displayed())
        class_map, expected = served_legend(url, photo, crf=True)
        seen = legend()
        print(f"legend with the CRF: {seen}")
        assert seen == expected
        assert "aeroplane" in [name for name, _ in seen]  # the photo's main object, named from VOC's descriptor
        assert sum(float(share.rstrip("%").lstrip("<")) for _, share in seen) == pytest.approx(100, abs=0.2)
        time_text = browser.find_element(By.ID, "time").text
        print(time_text)
        assert re.fullmatch(
            rf"Segmented {width} x {height} pixels in \d+\.\d\d s \(request and answer, CRF on\)\.", time_text
        )

        link = browser.find_element(By.ID, "download")
        assert link.get_attribute("download") == "2007_000032_class_map.png"
        href = link.get_attribute("href")
        assert href.startswith("data:image/png;base64,")
        downloaded = np.array(Image.open(io.BytesIO(base64.b64decode(href.split(",", 1)[1]))))
        np.testing.assert_array_equal(downloaded, class_map)

        read_canvas = "const c = document.getElementById('overlay'); return Array.from(c.getContext('2d')"
        read_canvas += ".getImageData(0, 0, c.width, c.height).data);"
        drawn = np.array(browser.execute_script(read_canvas), np.int64).reshape(height, width, 4)[..., :3]
        expected_overlay = overlay(picture, class_map, 0.5, VOC).astype(np.int64)
        assert np.abs(drawn - expected_overlay).mean() < 2  # Chromium's and Pillow's JPEG decoders may differ by 1
        screenshot = os.environ.get("KERAS_DEEPLAB_PAGE_SCREENSHOT") or str(tmp_path / "page.png")
        assert browser.save_screenshot(screenshot)
        assert Image.open(screenshot).format == "PNG"

        browser.execute_script(
            "const s = document.getElementById('opacity'); s.value = 100; s.dispatchEvent(new Event('input'));"
        )
        drawn = np.array(browser.execute_script(read_canvas), np.int64).reshape(height, width, 4)[..., :3]
        coloured = class_map != VOC.background
        assert coloured.any()
        np.testing.assert_array_equal(drawn[coloured], VOC.colormap()[class_map[coloured]])  # opacity 1: the colours

        browser.find_element(By.ID, "crf").click()  # the switch: the network's own class map
        wait.until(lambda _: "CRF off" in browser.find_element(By.ID, "time").text)
        _, expected_without = served_legend(url, photo, crf=False)
        print(f"legend without the CRF: {legend()}")
        assert legend() == expected_without

        big = tmp_path / "big.jpg"
        Image.fromarray(picture).resize((2 * width, 2 * height)).save(big, quality=60)
        browser.find_element(By.ID, "file").send_keys(str(big))
        wait.until(lambda _: browser.find_element(By.ID, "error").is_displayed())
        error = browser.find_element(By.ID, "error").text
        print(error)
        assert error == (
            f"Could not segment big.jpg: input image_bytes, image 0: image of {2 * width}x{2 * height} = "
            f"{4 * width * height} pixels is over the limit of {MAX_PIXELS} (serve --max-pixels)."
        )
        assert not browser.find_element(By.ID, "result").is_displayed()

        heavy = tmp_path / "heavy.png"  # refused by the page itself: the server would cut the upload off (413)
        heavy.write_bytes(np.random.default_rng(0).integers(0, 256, 600_000, dtype=np.uint8).tobytes())
        browser.find_element(By.ID, "file").send_keys(str(heavy))
        wait.until(lambda _: "heavy.png" in browser.find_element(By.ID, "error").text)
        assert browser.find_element(By.ID, "error").text == (
            "The file heavy.png is 0.57 MB: a request to this server may hold 0.25 MB at most (serve --max-body-mb), "
            "which holds a photo file of about 0.19 MB (base64 makes it a third larger)."
        )
