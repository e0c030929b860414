"""Evaluation: full-resolution mIoU of every example, multi-scale and flipped, and the `evaluate` command."""

import json
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_deeplab import MeanIoU, build_model, cli
from keras_deeplab.confusion import confusion_matrix, scores
from keras_deeplab.crf import dense_crf
from keras_deeplab.descriptors import make_descriptor
from keras_deeplab.evaluation import crf_grid_search, evaluate_model, format_table, predictions
from keras_deeplab.inference import class_probabilities
from keras_deeplab.report import ReportCollector, write_report
from keras_deeplab.trimap import band_mask
from pipelines import ArraySource, synthetic_source

NUM_CLASSES = 5


@pytest.fixture(scope="module")
def model():
    return build_model(16, num_classes=NUM_CLASSES, backbone="resnet50", width_multiplier=0.125, aspp_filters=16)


def odd_sized_source(count=3):
    """Examples of 45x67 pixels (nothing divides by 16) with 255 boundaries."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (count, 45, 67, 3), dtype=np.uint8)
    masks = rng.integers(0, NUM_CLASSES, (count, 45, 67)).astype(np.uint8)
    masks[:, ::7] = 255
    names = [f"odd_{index}" for index in range(count)]
    return ArraySource("odd", images, masks, names, descriptor=make_descriptor("odd", list("abcde")))


@pytest.mark.parametrize(
    ("scales", "flip", "fit_to"), [((1.0,), False, None), ((0.75,), True, None), ((1.0,), False, 33)]
)
def test_every_pixel_of_every_example_is_scored_at_full_resolution(model, scales, flip, fit_to):
    source = odd_sized_source()
    results = evaluate_model(model, source, scales=scales, flip=flip, fit_to=fit_to)
    reference = MeanIoU(NUM_CLASSES)
    for image, mask, _ in source.examples():
        pixels = tf.constant(image[None], tf.float32)
        # --fit-to pads with the pixel the network normalises to zero: keras' ResNet's ImageNet mean (RGB)
        pad = model.mean_pixel
        probabilities = class_probabilities(model, pixels, scales=scales, flip=flip, fit_to=fit_to, pad_pixel=pad)
        assert probabilities.shape == (1, 45, 67, NUM_CLASSES)
        reference.update_state(mask[None], tf.argmax(probabilities, axis=-1))
    assert results["examples"] == 3 and results["scales"] == list(scales) and results["flip"] == flip
    assert results["fit_to"] == fit_to
    assert results["miou"] == pytest.approx(reference.results()["miou"], abs=1e-6)
    assert results["per_class_iou"] == pytest.approx(reference.results()["per_class_iou"], abs=1e-6)
    assert results["pixel_accuracy"] == pytest.approx(reference.results()["pixel_accuracy"], abs=1e-6)
    if fit_to:
        assert f"fitted to {fit_to} as the official export" in format_table(results).splitlines()[-1]
        assert model.mean_pixel == pytest.approx((123.68, 116.779, 103.939))


def test_table_lists_every_class_then_miou(model):
    table = format_table(evaluate_model(model, odd_sized_source(), max_examples=1))
    lines = table.splitlines()
    assert [line.split()[0] for line in lines[1:6]] == list("abcde")
    assert lines[6].startswith("mIoU") and "1 images, output stride 16, scales 1" in lines[-1]


def test_empty_or_mismatched_datasets_fail_before_predicting(model):
    with pytest.raises(ValueError, match="synthetic/val: the dataset has no examples"):
        evaluate_model(model, synthetic_source("val", num_examples=0, image_size=64))
    other = build_model(16, num_classes=3, backbone="resnet50", width_multiplier=0.125, aspp_filters=16)
    with pytest.raises(ValueError, match="the dataset has 5 classes, the model 3"):
        evaluate_model(other, synthetic_source("val", num_examples=1, image_size=64))


def test_evaluate_command_prints_json_with_the_issue_keys(model, tmp_path, capsys):
    model.save(tmp_path / "model.keras")
    argv = ["evaluate", "--model", str(tmp_path / "model.keras"), "--format", "synthetic", "--split", "val"]
    argv += ["--output-stride", "8", "--scales", "0.5,1.0", "--flip", "--max-examples", "2", "--json"]
    assert cli.main(argv) == 0
    results = json.loads(capsys.readouterr().out)
    assert {"miou", "pixel_accuracy", "per_class_iou"} <= set(results)
    expected = evaluate_model(
        model.with_output_stride(8), synthetic_source("val"), scales=(0.5, 1.0), flip=True, max_examples=2
    )
    assert len(results["per_class_iou"]) == NUM_CLASSES
    assert results["miou"] == pytest.approx(expected["miou"], abs=1e-6)
    assert results["per_class_iou"] == pytest.approx(expected["per_class_iou"], abs=1e-6)
    assert (results["examples"], results["output_stride"], results["scales"], results["flip"]) == (
        2,
        8,
        [0.5, 1.0],
        True,
    )


def test_evaluate_takes_the_dataset_source_options_of_data(model, tmp_path, capsys):
    """The source options are one group shared with `data check/convert`: a synthetic split of 3 images of 48 px
    with its own seed is the one evaluated (before, evaluate could not name a TFDS dataset or these)."""
    model.save(tmp_path / "model.keras")
    argv = ["evaluate", "--model", str(tmp_path / "model.keras"), "--format", "synthetic", "--json"]
    argv += ["--num-examples", "3", "--image-size", "48", "--seed", "7"]
    assert cli.main(argv) == 0
    results = json.loads(capsys.readouterr().out)
    expected = evaluate_model(model, synthetic_source("val", num_examples=3, image_size=48, seed=7))
    assert results["examples"] == 3
    assert results["per_class_iou"] == pytest.approx(expected["per_class_iou"], abs=1e-6)


def test_evaluate_table_has_a_progress_bar_only_on_a_terminal(model, tmp_path, capsys, monkeypatch):
    model.save(tmp_path / "model.keras")
    argv = ["evaluate", "--model", str(tmp_path / "model.keras"), "--format", "synthetic", "--max-examples", "2"]
    assert cli.main(argv) == 0  # stdout is captured here, as when redirected to a file or a pipe
    redirected = capsys.readouterr().out
    assert "mIoU" in redirected
    assert "\b" not in redirected and "\r" not in redirected and "2/2" not in redirected
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert cli.main(argv) == 0
    assert "2/2" in capsys.readouterr().out  # Keras' bar, on a terminal
    assert cli.main([*argv, "--no-progress"]) == 0
    assert capsys.readouterr().out == redirected


def blocky_source():
    """One 45x67 photo of three flat regions: a mask whose boundaries are few, so trimap bands differ by width."""
    rng = np.random.default_rng(1)
    mask = np.zeros((45, 67), np.uint8)
    mask[:, 30:] = 1
    mask[20:, 50:] = 2
    mask[:, 29] = 255
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [0, 0, 0]], np.int16)
    image = colours[np.minimum(mask, 3)] + rng.integers(-20, 20, (45, 67, 3))
    image = np.clip(image, 0, 255).astype(np.uint8)
    return ArraySource("blocky", image[None], mask[None], ["blocky"], descriptor=make_descriptor("b", list("abcde")))


def test_crf_and_trimap_scores_equal_a_hand_computation(model):
    source = blocky_source()
    results = evaluate_model(model, source, crf={"iterations": 3}, trimap_widths=(2, 5))
    ((image, mask, probabilities, _),) = list(predictions(model, source))
    assert image.dtype == np.uint8 and image.shape == (45, 67, 3) and probabilities.shape == (45, 67, NUM_CLASSES)
    refined = dense_crf(image, probabilities, iterations=3).argmax(-1)
    by_hand = scores(confusion_matrix(mask, refined, NUM_CLASSES))
    assert results["crf"]["miou"] == pytest.approx(by_hand["miou"], abs=1e-9)
    assert results["crf"]["parameters"] == {"iterations": 3} and results["crf"]["seconds_per_image"] > 0
    for width in (2, 5):
        band = band_mask(mask, width)
        for scored, class_map in ((results, probabilities.argmax(-1)), (results["crf"], refined)):
            in_band = scores(confusion_matrix(mask[band], class_map[band], NUM_CLASSES))
            assert scored["trimap"][width]["miou"] == pytest.approx(in_band["miou"], abs=1e-9)
    assert results["trimap"][2]["pixels"] < results["trimap"][5]["pixels"] < np.sum(mask != 255)
    table = format_table(results)
    assert "IoU+CRF" in table.splitlines()[0] and "mIoU within 5 px" in table and "CRF (iterations 3)" in table


def test_crf_grid_search_scores_every_combination_best_first(model):
    source = odd_sized_source(count=1)
    grid = {"bi_w": (0.0, 4.0), "iterations": (1.0, 3.0)}
    scored = crf_grid_search(model, source, grid)
    assert len(scored) == 4 and [row["miou"] for row in scored] == sorted((row["miou"] for row in scored), reverse=True)
    ((image, mask, probabilities, _),) = list(predictions(model, source))
    for row in scored:
        by_hand = scores(
            confusion_matrix(mask, dense_crf(image, probabilities, **row["parameters"]).argmax(-1), NUM_CLASSES)
        )
        assert row["miou"] == pytest.approx(by_hand["miou"], abs=1e-9)


def test_evaluate_command_with_crf_and_trimap(model, tmp_path, capsys):
    model.save(tmp_path / "model.keras")
    argv = ["evaluate", "--model", str(tmp_path / "model.keras"), "--format", "synthetic", "--split", "val"]
    argv += ["--max-examples", "1", "--crf", "--crf-param", "iterations=2", "--trimap", "4,8", "--json"]
    assert cli.main(argv) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results["trimap"]) == {"4", "8"} and set(results["crf"]["trimap"]) == {"4", "8"}
    assert results["crf"]["parameters"] == {"iterations": 2.0}
    with pytest.raises(SystemExit) as usage_error:  # not a CRF parameter: argparse's usage error
        cli.main([*argv[:9], "--crf-param", "sigma=3"])
    assert usage_error.value.code == 2
    assert "NAME one of iterations, bi_w" in capsys.readouterr().err


def test_report_keeps_the_worst_images_and_adds_up_the_confusion():
    descriptor = make_descriptor("abc", ["background", "b", "c"])
    report = ReportCollector(descriptor, worst=2)
    mask = np.array([[0, 1], [2, 255]], np.uint8)
    image = np.zeros((2, 2, 3), np.uint8)
    answers = {"right": mask % 255, "one_wrong": np.array([[0, 1], [1, 0]]), "all_wrong": np.array([[1, 2], [0, 0]])}
    for name, prediction in answers.items():
        report.add(name, image, mask, prediction)
    expected = sum(confusion_matrix(mask, prediction, 3) for prediction in answers.values())
    np.testing.assert_array_equal(report.confusion, expected)
    assert report.images == 3
    worst = report.worst_images()
    assert [example["name"] for example in worst] == ["all_wrong", "one_wrong"]
    assert [example["miou"] for example in worst] == [0.0, pytest.approx((1 + 0.5 + 0) / 3)]
    np.testing.assert_array_equal(worst[0]["prediction"], answers["all_wrong"])


def test_evaluate_report_writes_charts_worst_images_and_an_index(model, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the report extra (matplotlib) is not installed")
    source = odd_sized_source()
    report = ReportCollector(source.descriptor, worst=2)
    results = evaluate_model(model, source, report=report)
    assert scores(report.confusion)["per_class_iou"] == pytest.approx(results["per_class_iou"], abs=1e-9)
    page = write_report(tmp_path / "report", report, "tiny on odd")
    html = (tmp_path / "report" / "index.html").read_text()
    worst = report.worst_images()
    assert len(worst) == 2 and worst[0]["miou"] <= worst[1]["miou"]
    files = [
        "per_class_iou.png",
        "confusion.png",
        *(f"worst_{rank}_{example['name']}.png" for rank, example in enumerate(worst, start=1)),
    ]
    for name in files:
        assert f'src="{name}"' in html
        picture = Image.open(tmp_path / "report" / name)
        assert picture.format == "PNG" and min(picture.size) >= 200
    assert page == str(tmp_path / "report" / "index.html")
    assert f"mIoU <b>{100 * results['miou']:.2f}%</b>" in html and "<td>" in html
    assert sorted(path.name for path in (tmp_path / "report").iterdir()) == sorted([*files, "index.html"])
    model.save(tmp_path / "model.keras")  # and from the command line
    argv = ["evaluate", "--model", str(tmp_path / "model.keras"), "--format", "synthetic", "--split", "val"]
    assert cli.main([*argv, "--max-examples", "2", "--report", str(tmp_path / "cli")]) == 0
    assert f"report: {tmp_path / 'cli' / 'index.html'}" in capsys.readouterr().out
    assert len(list((tmp_path / "cli").glob("worst_*.png"))) == 2
    assert cli.main([*argv, "--crf-search", "--report", str(tmp_path / "no")]) == 1
    assert "--report draws an evaluation; it does not apply to --crf-search" in capsys.readouterr().err


def test_a_labelme_export_is_trained_and_evaluated_with_its_own_classes(tmp_path):
    """A VOC-layout folder with its own class_names.txt: a recipe of its 7 classes opens it (it was refused as
    "voc/train has 21 classes"), and the evaluation names its classes."""
    import pipelines_fixtures as fixtures

    from keras_deeplab.recipe import load_recipe
    from keras_deeplab.training.inputs import open_sources

    root = tmp_path / "export"
    fixtures.write_labelme_voc(str(root))
    recipe = load_recipe("demo", ["data.format=voc", f"data.root={root}", "model.num_classes=7"])
    train_source, eval_source = open_sources(recipe)
    assert train_source.class_names == eval_source.class_names == tuple(fixtures.LABELME_CLASSES)
    seven = build_model(16, num_classes=7, backbone="resnet50", width_multiplier=0.125, aspp_filters=16)
    results = evaluate_model(seven, eval_source)
    assert (results["class_names"], results["examples"]) == (fixtures.LABELME_CLASSES, 3)
    assert "sofa" in format_table(results)


def test_a_151_class_model_is_evaluated_on_ade20k_and_predict_names_its_classes(tmp_path, capsys):
    """The published ADE20K models' 151 classes are the ADE20K descriptor's: `evaluate --format ade20k` scores such
    a model (it was refused: "the dataset has 150 classes, the model 151") and `predict` names and colours its
    classes ("wall" for id 1, where it wrote class_1). The model says "wall" everywhere (its logits: its bias).
    `--dataset ade20k` passes the same descriptor (tests/test_descriptors.py)."""
    import pipelines_fixtures as fixtures

    from keras_deeplab.descriptors import ADE20K
    from keras_deeplab.visualize import legend_strip

    ade = build_model(16, num_classes=151, backbone="mobilenetv2", width_multiplier=0.35, aspp_filters=8)
    logits = ade.get_layer("logits")
    logits.set_weights([np.zeros_like(logits.kernel.numpy()), np.eye(151, dtype="float32")[1]])
    ade.save(tmp_path / "ade.keras")
    masks = fixtures.write_ade20k(str(tmp_path / "ade20k"))
    argv = ["evaluate", "--model", str(tmp_path / "ade.keras"), "--format", "ade20k", "--json"]
    assert cli.main([*argv, "--root", str(tmp_path / "ade20k"), "--split", "validation"]) == 0
    results = json.loads(capsys.readouterr().out)
    annotations = np.concatenate([np.array(Image.open(path)).reshape(-1) for path in masks.values()])
    scored = annotations[annotations != 0]  # "other" is not scored; every scored pixel is predicted "wall"
    wall = np.mean(scored == 1)
    assert results["class_names"][:2] == ["other", "wall"] and len(results["per_class_iou"]) == 151
    present = {index: iou for index, iou in enumerate(results["per_class_iou"]) if iou is not None}
    assert present == pytest.approx({1: wall, 2: 0.0, 150: 0.0})  # class 0: neither labelled nor predicted
    assert results["miou"] == pytest.approx(wall / 3)

    photo = sorted((tmp_path / "ade20k" / "images" / "validation").glob("*.jpg"))[0]
    out = tmp_path / "predicted"  # no --dataset: the descriptor its number of classes names
    assert cli.main(["predict", str(photo), "--model", str(tmp_path / "ade.keras"), "--out", str(out)]) == 0
    mask = np.array(Image.open(out / f"{photo.stem}.png"))
    assert np.all(mask == 1) and Image.open(out / f"{photo.stem}.png").getpalette()[:6] == [0, 0, 0, 120, 120, 120]
    overlay = np.array(Image.open(out / f"{photo.stem}_overlay.jpg"), np.int64)
    named = legend_strip(mask, mask.shape[1], ADE20K).astype(np.int64)  # "wall 100.0%"
    numbered = make_descriptor("151_classes", [f"class_{i}" for i in range(151)], palette=ADE20K.palette)
    assert overlay.shape[0] == mask.shape[0] + named.shape[0]
    assert np.abs(overlay[mask.shape[0] :] - named).mean() < 2
    assert np.abs(overlay[mask.shape[0] :] - legend_strip(mask, mask.shape[1], numbered)).mean() > 2
