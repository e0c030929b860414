"""The page `keras-deeplab serve` answers at `GET /`: try the served model in a browser.

One self-contained HTML file (serving/page.html: no external script, style sheet or font, so it works offline)
with the server's facts filled in: the model's name, its classes' names and colours (the dataset descriptor),
the request limits and whether `--crf` is on. The page segments a photo through the same REST API as every
client (`POST /v1/models/NAME:predict`, within the same limits), draws the overlay and the legend of the classes
present itself, and shows the server's errors as a sentence. With `serve --crf`, its switch sends `"crf": false`
to get the network's own class map.
"""

from __future__ import annotations

import json
from pathlib import Path

from keras_deeplab.descriptors import DatasetDescriptor, descriptor_for_num_classes

TEMPLATE = Path(__file__).with_name("page.html")
PAGE_PATHS = ("/", "/index.html")
# What the page may load: only itself, its own inline script and style, pictures it makes, and this server.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data: blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'"
)
GENERIC_CLASSES = 255  # names and colours for a model whose number of classes is unknown


def page_html(
    model_name: str,
    descriptor: DatasetDescriptor | None,
    *,
    max_pixels: int,
    max_request_pixels: int,
    max_body_bytes: int,
    crf: bool,
) -> bytes:
    """The page (UTF-8 HTML) for the model `model_name` whose classes `descriptor` names (None: "class_N" in the
    VOC colours), within the given limits; `crf`: the server refines class maps with the CRF (show its switch)."""
    descriptor = descriptor or descriptor_for_num_classes(GENERIC_CLASSES)
    config = {
        "model": model_name,
        "crf": bool(crf),
        "maxPixels": min(max_pixels, max_request_pixels),
        "maxBodyBytes": max_body_bytes,
        "ignoreLabel": descriptor.ignore_label,
        "background": descriptor.background,
        "classes": [
            {"name": name, "color": list(color)}
            for name, color in zip(descriptor.class_names, descriptor.palette, strict=True)
        ],
    }
    # Inside <script>, "</" would end the element: JSON allows "\/" for "/".
    text = json.dumps(config).replace("</", "<\\/")
    return TEMPLATE.read_text(encoding="utf-8").replace("{{config}}", text, 1).encode("utf-8")
