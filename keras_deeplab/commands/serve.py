"""`keras-deeplab serve`: a SavedModel export over TF Serving's REST API (see serving/rest_api.py), and a page at `/`
to try it in a browser (serving/page.py)."""

from __future__ import annotations

import argparse

from keras_deeplab.commands.arguments import add_crf_options, add_dataset_option, crf_settings, port, positive_int
from serving.settings import (
    DEFAULT_HOST,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONCURRENT,
    DEFAULT_MAX_CRF_MB,
    DEFAULT_MAX_INSTANCES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_REQUEST_PIXELS,
    DEFAULT_PORT,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve a SavedModel export over TF Serving's REST API")
    parser.add_argument("base_path", help="export folder holding version sub-folders (export/deeplab)")
    parser.add_argument("--name", help="model name in the URL (default: the folder's name)")
    parser.add_argument("--host", default=DEFAULT_HOST, help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=port, default=DEFAULT_PORT)
    parser.add_argument("--num-versions", type=positive_int, default=1, help="serve the N highest versions")
    parser.add_argument("--max-body-mb", type=float, default=DEFAULT_MAX_BODY_BYTES / 2**20)
    parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, help="largest image, H x W")
    parser.add_argument(
        "--max-request-pixels",
        type=positive_int,
        default=DEFAULT_MAX_REQUEST_PIXELS,
        help="pixels of all the images of one request together (default %(default)s)",
    )
    parser.add_argument(
        "--max-instances",
        type=positive_int,
        default=DEFAULT_MAX_INSTANCES,
        help="images per request (default %(default)s)",
    )
    parser.add_argument(
        "--max-concurrent", type=positive_int, default=DEFAULT_MAX_CONCURRENT, help="predictions at once"
    )
    parser.add_argument("--quiet", action="store_true", help="no line per request")
    add_crf_options(parser, "class maps refined by the fully connected CRF")
    add_dataset_option(parser, "the page's class names (default: from the number of classes)")
    parser.add_argument(
        "--max-crf-mb",
        type=float,
        default=DEFAULT_MAX_CRF_MB,
        help="the CRF's memory for one image, MiB (its worst case for the image's size; default %(default)s)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from serving.rest_api import RestApi
    from serving.server import make_http_server

    api = RestApi(
        args.base_path,
        args.name,
        num_versions=args.num_versions,
        max_pixels=args.max_pixels,
        max_request_pixels=args.max_request_pixels,
        max_instances=args.max_instances,
        max_concurrent=args.max_concurrent,
        crf=crf_settings(args),
        dataset=args.dataset,
        max_crf_mb=args.max_crf_mb,
    )
    try:
        server = make_http_server(
            api, args.host, args.port, max_body_bytes=int(args.max_body_mb * 2**20), access_log=not args.quiet
        )
    except OSError as error:
        raise OSError(f"{args.host}:{args.port}: cannot listen there ({error.strerror or error})") from error
    host, port = server.server_address[:2]
    url = f"http://{host}:{port}/v1/models/{api.name}"
    print(f"serving {api.name} versions {sorted(api.versions)} at {url}; try it at http://{host}:{port}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
