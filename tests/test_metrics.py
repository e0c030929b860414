"""MeanIoU against a NumPy confusion-matrix reference, alone, under MirroredStrategy and in model.compile."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_deeplab import MeanIoU
from keras_deeplab.confusion import confusion_matrix, scores

NUM_CLASSES = 6


def random_labels(seed, shape=(3, 10, 12)):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, shape).astype(np.uint8)
    labels[rng.random(shape) < 0.2] = 255
    return labels


def reference(labels, predictions):
    """Per-class IoU (NaN where the class is absent from both), mIoU over present classes, pixel accuracy."""
    valid = labels != 255
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES))
    np.add.at(matrix, (labels[valid].astype(int), predictions[valid].astype(int)), 1)
    intersection = np.diag(matrix)
    union = matrix.sum(0) + matrix.sum(1) - intersection
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = intersection / union
    return iou, np.nanmean(iou), intersection.sum() / matrix.sum()


def assert_matches(metric, labels, predictions):
    iou, miou, accuracy = reference(labels, predictions)
    results = metric.results()
    np.testing.assert_allclose([np.nan if x is None else x for x in results["per_class_iou"]], iou, rtol=1e-12)
    np.testing.assert_allclose(results["miou"], miou, rtol=1e-6)
    np.testing.assert_allclose(results["pixel_accuracy"], accuracy, rtol=1e-6)


def test_class_ids_and_logits_match_the_numpy_reference():
    labels = random_labels(0)
    logits = np.random.default_rng(1).normal(size=(*labels.shape, NUM_CLASSES)).astype(np.float32)
    predictions = logits.argmax(-1)
    for y_pred in (predictions.astype(np.int32), logits):
        metric = MeanIoU(NUM_CLASSES)
        metric.update_state(labels[:2], y_pred[:2])
        metric.update_state(labels[2:, ..., None], y_pred[2:])
        assert_matches(metric, labels, predictions)


def test_absent_class_has_no_iou_and_reset_clears():
    labels = np.array([[[0, 0, 1, 255]]], np.uint8)
    predictions = np.array([[[0, 1, 1, 3]]], np.uint8)
    metric = MeanIoU(NUM_CLASSES)
    metric.update_state(labels, predictions)
    results = metric.results()
    assert results["per_class_iou"] == [0.5, 0.5, None, None, None, None]
    assert results["miou"] == 0.5 and results["pixel_accuracy"] == pytest.approx(2 / 3)
    metric.reset_state()
    assert metric.results()["miou"] == 0.0 and not metric.confusion_matrix.numpy().any()


def test_sums_over_the_replicas_of_a_mirrored_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    labels = random_labels(2, shape=(4, 8, 8))
    predictions = random_labels(3, shape=(4, 8, 8)) % NUM_CLASSES
    with strategy.scope():
        metric = MeanIoU(NUM_CLASSES)
    dataset = tf.data.Dataset.from_tensor_slices((labels, predictions)).batch(4)
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))

    @tf.function
    def update(inputs):
        strategy.run(metric.update_state, args=inputs)

    update(batch)
    assert_matches(metric, labels, predictions)


def test_usable_in_model_compile():
    labels = random_labels(4, shape=(4, 6, 6))
    images = np.random.default_rng(5).normal(size=(4, 6, 6, 2)).astype(np.float32)
    inputs = keras.Input((None, None, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(NUM_CLASSES, 1)(inputs))
    model.compile(loss=lambda y, p: tf.reduce_mean(p) * 0.0, metrics=[MeanIoU(NUM_CLASSES)])
    evaluated = model.evaluate(images, labels, batch_size=2, verbose=0, return_dict=True)
    _, miou, _ = reference(labels, model.predict(images, verbose=0).argmax(-1))
    np.testing.assert_allclose(evaluated["mean_iou"], miou, rtol=1e-6)


def test_out_of_range_label_is_an_error():
    metric = MeanIoU(NUM_CLASSES)
    with pytest.raises(tf.errors.InvalidArgumentError, match="class ids below 6"):
        metric.update_state(np.full((1, 2, 2), 9, np.uint8), np.zeros((1, 2, 2), np.uint8))


def test_results_are_the_numpy_scores_of_the_same_confusion_matrix():
    labels = random_labels(6)
    predictions = random_labels(7) % NUM_CLASSES
    metric = MeanIoU(NUM_CLASSES)
    metric.update_state(labels, predictions)
    matrix = confusion_matrix(labels, predictions, NUM_CLASSES)
    np.testing.assert_array_equal(metric.confusion_matrix.numpy(), matrix)
    assert metric.results() == scores(matrix)
    assert scores(matrix)["miou"] == pytest.approx(float(metric.result()), rel=1e-6)
    assert_matches(metric, labels, predictions)


def test_numpy_confusion_counts_ignores_and_refuses():
    labels = np.array([[0, 0, 1, 255], [2, 2, 2, 255]])
    predictions = np.array([[0, 1, 1, 7], [2, 2, 0, 0]])  # 7 under an ignored pixel is not counted
    matrix = confusion_matrix(labels, predictions, 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 2]]
    result = scores(matrix)
    assert result["per_class_iou"] == pytest.approx([1 / 3, 1 / 2, 2 / 3])
    assert result["miou"] == pytest.approx(np.mean([1 / 3, 1 / 2, 2 / 3]))
    assert result["pixel_accuracy"] == pytest.approx(4 / 6)
    assert scores(np.zeros((3, 3))) == {"miou": 0.0, "pixel_accuracy": 0.0, "per_class_iou": [None, None, None]}
    with pytest.raises(ValueError, match="labels must be class ids below 3"):
        confusion_matrix(np.array([3]), np.array([0]), 3)
    with pytest.raises(ValueError, match="predicted class ids must be below 3"):
        confusion_matrix(np.array([0]), np.array([3]), 3)


def test_ade20k_is_scored_as_the_official_deeplab_eval():
    """research/deeplab/eval.py: tf.metrics.mean_iou over 151 classes with weight 0 where the annotation is 0
    ("other", ignored). An "other" predicted on a scored pixel gives class 0 a union (its predictions) and no
    intersection, so the official mean counts it at IoU 0; ours, the ADE20K reader's labels (0 -> 255), the same."""
    from keras_deeplab.descriptors import ADE20K
    from pipelines.decode import descriptor_table

    rng = np.random.default_rng(0)
    annotation = rng.choice([0, 1, 2, 13, 150], (2, 16, 20)).astype(np.int32)
    predictions = rng.choice([0, 1, 2, 13, 77], annotation.shape).astype(np.int32)  # some "other", a stray 77
    with tf.Graph().as_default():
        labels, predicted = tf.constant(annotation.reshape(-1)), tf.constant(predictions.reshape(-1))
        weights = tf.constant((annotation != 0).reshape(-1), tf.float32)
        official, update = tf.compat.v1.metrics.mean_iou(labels, predicted, 151, weights=weights)
        with tf.compat.v1.Session() as session:
            session.run(tf.compat.v1.local_variables_initializer())
            session.run(update)
            official = session.run(official)
    metric = MeanIoU(ADE20K.num_classes)
    metric.update_state(descriptor_table(ADE20K)[annotation], predictions)
    results = metric.results()
    assert results["per_class_iou"][0] == 0.0 and results["per_class_iou"][77] == 0.0
    assert sum(iou is not None for iou in results["per_class_iou"]) == 6
    assert results["miou"] == pytest.approx(float(official), rel=1e-6)
    assert float(metric.result()) == pytest.approx(float(official), rel=1e-6)
