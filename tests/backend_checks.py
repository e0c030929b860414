"""Run by tests/test_backends.py in a process of its own with KERAS_BACKEND=jax or =torch (Keras picks its backend at
import, once per process): every backend-neutral check at once on tiny inputs, against what the TensorFlow process
computed and left in FOLDER. Prints one JSON object of figures; the test asserts on them.

Usage: KERAS_BACKEND=jax python tests/backend_checks.py FOLDER
"""

import json
import os
import sys
import time

import numpy as np


def main(folder: str) -> dict:
    import keras

    from keras_deeplab import build_model

    started = time.perf_counter()
    result = {"backend": keras.backend.backend(), "seconds": {}}

    def lap(name: str) -> None:
        result["seconds"][name] = round(time.perf_counter() - started, 1)

    with open(os.path.join(folder, "build_config.json")) as file:
        build_config = json.load(file)
    expected = dict(np.load(os.path.join(folder, "expected.npz")))
    images, labels = expected["images"], expected["labels"]

    # The model builds (and traces, on JAX) without TensorFlow: a GPU machine may have JAX or PyTorch only.
    built = build_model(**build_config)
    if keras.backend.backend() == "jax":
        import jax

        shape = jax.eval_shape(built, jax.ShapeDtypeStruct((1, 40, 48, 3), "float32")).shape
        result["eval_shape"] = list(shape)
    result["tensorflow_imported_by_build"] = "tensorflow" in sys.modules
    lap("build")

    import keras_deeplab

    path = os.path.join(folder, "model.keras")
    for loader, load in (("load_model", keras_deeplab.load_model), ("keras", keras.models.load_model)):
        model = load(path)
        logits, reference = keras.ops.convert_to_numpy(model(images)), expected["logits"]
        result[f"{loader}_relative"] = float(np.abs(logits - reference).max() / np.abs(reference).max())
        result[f"{loader}_argmax"] = float((logits.argmax(-1) == reference.argmax(-1)).mean())
        lap(loader)

    from keras_deeplab.inference import class_probabilities
    from keras_deeplab.losses import segmentation_loss
    from keras_deeplab.metrics import MeanIoU

    probabilities = class_probabilities(model, images, scales=(1.0, 0.75), flip=True)
    result["probabilities_diff"] = float(
        np.abs(keras.ops.convert_to_numpy(probabilities) - expected["probabilities"]).max()
    )
    fitted = class_probabilities(model, images[:, :, :24], fit_to=40, pad_pixel=model.mean_pixel)
    result["fitted_diff"] = float(np.abs(keras.ops.convert_to_numpy(fitted) - expected["fitted"]).max())
    loss = segmentation_loss(labels, expected["logits"], class_weights=[1.0, 2.0, 0.5], hard_pixel_fraction=0.5)
    result["loss_diff"] = abs(float(loss) - float(expected["loss"]))
    metric = MeanIoU(3)
    metric.update_state(labels, expected["logits"])
    result["miou_diff"] = abs(float(metric.result()) - float(expected["miou"]))
    lap("inference_loss_metric")

    import tensorflow as tf

    from keras_deeplab import MeanIoU as Metric
    from keras_deeplab import SegmentationLoss

    keras.utils.set_random_seed(0)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), loss=SegmentationLoss(), metrics=[Metric(3)])
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(2)
    history = model.fit(dataset, epochs=3, verbose=0).history
    result["fit_loss"], result["fit_miou"] = history["loss"], history["mean_iou"]
    lap("fit")

    # A channel whose values are nearly equal beside their mean: keras' PyTorch moments (E[x^2] - E[x]^2) cancel
    # to a negative variance there, and a tiny model's fit went NaN from it; our batch norm's must not.
    from keras_deeplab.layers import BatchNormalization

    flat = (1000 + 1e-3 * np.random.default_rng(0).normal(size=(2, 2, 2, 64))).astype("float32")
    normalized = keras.ops.convert_to_numpy(BatchNormalization()(flat, training=True))
    result["flat_channel_batch_norm_finite"] = bool(np.isfinite(normalized).all())

    try:
        keras_deeplab.train("demo")
    except ValueError as error:
        result["train_refusal"] = str(error)
    return result


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
