"""VGG-16 as DeepLab v1 and v2 modify it (arXiv 1412.7062 section 3.1; arXiv 1606.00915 section 4).

Following the official DeepLab v1 network (deeplab-public `exper/voc12/config/deeplab_largeFOV/train.prototxt`,
read in the copy github.com/corenel/deeplab-public @ad566e9): the thirteen 3x3 convs of VGG-16 with ReLU, and
after each of the five blocks a 3x3 max pooling with padding 1 instead of VGG's 2x2; pool1..pool3 stride 2,
pool4 and pool5 stride 1, the three conv5 convs dilated by 2 ("hole: 2"): output stride 8. Other output
strides follow the rule of the other backbones (`AtrousSchedule`): at 16 pool4 strides and conv5 is not
dilated; at 32 every pool strides (VGG-16's own stride, with 3x3 pools). The pools use "same" padding: the
prototxt's on odd input sizes (321 = 32k - 31, as the official code crops), one row fewer than Caffe's ceil
mode on even ones. The fully connected layers are the heads' fc6/fc7 (`heads.largefov`, `heads.aspp_v2`).

Layer names follow keras.applications' VGG16 (block1_conv1 .. block5_conv3, block1_pool .. block5_pool), so
its ImageNet weight file loads by name; given its `include_top` file, fc6 and fc7 start from its fc1 and fc2
decimated as the v1 paper did (`decimated_fc_weights`). Pixels: "caffe" normalisation (BGR, mean subtracted).
The v3+ decoder's low-level feature is block2's pooled output (block3's input), stride 4, 128 channels.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import numpy as np
from keras import layers

from keras_deeplab import constants
from keras_deeplab.backbones.base import AtrousSchedule, BackboneFeatures, BackboneSpec, scaled_width
from keras_deeplab.layers import Conv2D, NormSettings
from keras_deeplab.weights import WeightFileError, copy_layer_weights, read_legacy_h5_weights, weighted_layers


def vgg16_features(
    inputs, *, output_stride: int, norm: NormSettings | None = None, width_multiplier: float = 1.0
) -> BackboneFeatures:
    """DeepLab's VGG-16 on preprocessed pixels (B, H, W, 3); no batch norm (`norm` is unused).

    Returns the stride-4 feature (block2_pool, 128*w channels) and block5_pool at `output_stride` (512*w).
    """
    del norm
    constants.check_output_stride(output_stride)
    schedule, x, low_level = AtrousSchedule(output_stride), inputs, None
    for block, (filters, convs) in enumerate(constants.VGG16_BLOCKS, start=1):
        rate = schedule.rate
        for index in range(1, convs + 1):
            x = Conv2D(
                scaled_width(filters, width_multiplier),
                3,
                padding="same",
                dilation_rate=rate,
                activation="relu",
                name=f"block{block}_conv{index}",
            )(x)
        stride, _ = schedule.next_layer(2)
        x = layers.MaxPooling2D(3, strides=stride, padding="same", name=f"block{block}_pool")(x)
        if block == constants.VGG16_LOW_LEVEL_BLOCK:
            low_level = x
    return BackboneFeatures(low_level=low_level, high_level=x, output_stride=output_stride)


def _taps(size: int, kernel_size: int) -> list[int]:
    """Every k-th of `size` spatial taps, `kernel_size` of them from the first to the last (7 -> 3: 0, 3, 6)."""
    if kernel_size == 1:
        return [size // 2]
    if kernel_size > size or (size - 1) % (kernel_size - 1):
        raise ValueError(
            f"fc6 kernel size {kernel_size} does not subsample the {size}x{size} fc1 evenly: "
            f"use one of {[k for k in range(1, size + 1) if k == 1 or (size - 1) % (k - 1) == 0]}"
        )
    step = (size - 1) // (kernel_size - 1)
    return list(range(0, size, step))


def _every(width: int, filters: int, what: str) -> int:
    if filters > width or width % filters:
        raise ValueError(f"{what}: {filters} filters do not subsample the file's {width} evenly")
    return width // filters


def decimate_fc(
    fc1: Sequence[np.ndarray], fc2: Sequence[np.ndarray], kernel_size: int, filters: int
) -> dict[str, list[np.ndarray]]:
    """fc6 and fc7 conv weights from VGG-16's fc1 ((7*7*C, N) kernel, (N,) bias) and fc2 ((N, N), (N,)).

    As the v1 paper (section 4.1, "we have subsampled the first FC layer"): fc1 is reshaped to a 7x7xCxN conv
    and subsampled in space (every k-th tap, down to `kernel_size`: 7 -> 3 every 3rd, 7 -> 4 every 2nd) and in
    its filters (every N/filters-th); fc2 keeps every N/filters-th input and output. Returns
    {'fc6': [(k, k, C, filters) kernel, (filters,) bias], 'fc7': [(1, 1, filters, filters), (filters,)]}.
    """
    fc1_kernel, fc1_bias = (np.asarray(array) for array in fc1)
    fc2_kernel, fc2_bias = (np.asarray(array) for array in fc2)
    size = constants.VGG16_FC_SIZE
    inputs, width = fc1_kernel.shape
    if inputs % (size * size):
        raise ValueError(f"fc1 has {inputs} inputs, not a {size}x{size}xC feature map flattened")
    step = _every(width, filters, "fc6")
    taps = _taps(size, kernel_size)
    kernel = fc1_kernel.reshape(size, size, inputs // (size * size), width)  # Flatten's (row, column, channel)
    fc6_kernel = kernel[taps][:, taps][..., ::step]
    fc7_kernel = fc2_kernel[::step, ::step][np.newaxis, np.newaxis]
    return {
        "fc6": [np.ascontiguousarray(fc6_kernel), fc1_bias[::step].copy()],
        "fc7": [np.ascontiguousarray(fc7_kernel), fc2_bias[::step].copy()],
    }


def decimated_fc_weights(
    path: str | os.PathLike, fc6: Sequence[int] = constants.LARGEFOV_FC6
) -> dict[str, list[np.ndarray]]:
    """fc6/fc7 weights for an fc6 of (kernel size, rate, filters) from keras.applications' VGG16 include_top file
    (`vgg16_weights_tf_dim_ordering_tf_kernels.h5`): see `decimate_fc`. The rate does not change the weights."""
    kernel_size, _, filters = fc6
    weights = read_legacy_h5_weights(path, only=("fc1", "fc2"))
    if not weights.get("fc1") or not weights.get("fc2"):
        raise WeightFileError(
            f"{os.fspath(path)}: no fc1/fc2 layers; expected keras.applications' VGG16 include_top file "
            "(vgg16_weights_tf_dim_ordering_tf_kernels.h5)"
        )
    return decimate_fc(weights["fc1"], weights["fc2"], kernel_size, filters)


def load_fc_weights(model, path: str | os.PathLike) -> list[str]:
    """Set every fc6/fc7 pair of `model` (LargeFOV's "fc6", "fc7"; ASPP-v2 branches' "fc6_1", "fc7_1", ...) from
    the decimated fc1/fc2 of `path` when it is an include_top file; a no-top file sets nothing. Returns the
    names of the layers set."""
    file_layers = read_legacy_h5_weights(path, only=("fc1", "fc2"))
    if not file_layers.get("fc1") or not file_layers.get("fc2"):
        return []
    weights = {}
    for layer in weighted_layers(model).values():
        match = re.fullmatch(r"fc6(_\d+)?", layer.name)
        if match is None:
            continue
        kernel_size, _, _, filters = layer.kernel.shape
        decimated = decimate_fc(file_layers["fc1"], file_layers["fc2"], int(kernel_size), int(filters))
        suffix = match.group(1) or ""
        weights[f"fc6{suffix}"], weights[f"fc7{suffix}"] = decimated["fc6"], decimated["fc7"]
    return copy_layer_weights(model, weights, os.fspath(path), missing_hint="fc7 of the same width as fc6")


SPEC = BackboneSpec(
    name="vgg16",
    build=vgg16_features,
    pixel_mean=constants.VGG16_CAFFE_MEAN_BGR,
    reverse_channels=True,
    layer_groups={"stem": (), "backbone": ("block",)},
    imagenet_weights="vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5",
    unused_weight_layers=constants.VGG16_UNUSED_WEIGHT_LAYERS,
    fc_head=True,
    load_head_weights=load_fc_weights,
)
SPECS = (SPEC,)
