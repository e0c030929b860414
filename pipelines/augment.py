"""Training augmentation as in the DeepLab papers, in TensorFlow ops on one (image, mask) pair.

Random scale in [min_scale, max_scale] (in `scale_step` steps, or continuous), pad to the crop size with the
mean pixel in the image and IGNORE_LABEL in the mask, random crop, random horizontal flip. The image is
resized bilinearly, the mask only ever with nearest neighbour, both on the same half-pixel-centre grid, so they
stay aligned. Only the crop's window of the scaled pair is computed: the result equals resizing the whole
pair, padding it at the bottom and right, and cropping. Every random draw comes from one stateless seed, so a
seed gives the same crops on any machine and in any parallel order.
"""

from __future__ import annotations

import tensorflow as tf

from keras_deeplab.constants import IGNORE_LABEL, MEAN_PIXEL_RGB


def random_scale(draw: tf.Tensor, min_scale: float, max_scale: float, scale_step: float | None) -> tf.Tensor:
    """A scale from a uniform draw in [0, 1): continuous, or one of min_scale, min_scale + step, ..., max_scale."""
    if not 0 < min_scale <= max_scale:
        raise ValueError(f"scales must satisfy 0 < min_scale <= max_scale, got {min_scale}, {max_scale}")
    if scale_step is None or min_scale == max_scale:
        return min_scale + draw * (max_scale - min_scale)
    steps = round((max_scale - min_scale) / scale_step) + 1
    index = tf.minimum(tf.cast(draw * steps, tf.int32), steps - 1)
    return min_scale + tf.cast(index, tf.float32) * scale_step


def scaled_window(
    image: tf.Tensor, mask: tf.Tensor, scaled_size: tf.Tensor, offset: tf.Tensor, window: tf.Tensor
) -> tuple[tf.Tensor, tf.Tensor]:
    """Rows/cols [offset, offset + window) of the pair resized to `scaled_size`, computing only that window.

    image (H, W, 3) any dtype -> float32, bilinear (half-pixel centres, no antialiasing: the same values as
    `tf.image.resize(image, scaled_size)[window]`); mask (H, W) uint8 -> uint8, nearest neighbour (exactly
    `tf.image.resize(..., method="nearest")[window]`). Both sample the same source coordinates.
    """
    size = tf.shape(mask)
    scale = tf.cast(scaled_size, tf.float32) / tf.cast(size, tf.float32)
    image = tf.raw_ops.ScaleAndTranslate(
        images=image[None],
        size=window,
        scale=scale,
        translation=-tf.cast(offset, tf.float32),
        kernel_type="triangle",
        antialias=False,
    )[0]
    source = [
        tf.minimum(
            tf.cast(
                (tf.cast(tf.range(offset[axis], offset[axis] + window[axis]), tf.float32) + 0.5)
                * (tf.cast(size[axis], tf.float32) / tf.cast(scaled_size[axis], tf.float32)),
                tf.int32,
            ),
            size[axis] - 1,
        )
        for axis in (0, 1)
    ]
    mask = tf.gather(tf.gather(mask, source[0]), source[1], axis=1)
    return image, mask


def pad_pair(image: tf.Tensor, mask: tf.Tensor, height: int, width: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Pad bottom and right to at least (height, width): the image with the mean pixel, the mask with 255."""
    size = tf.shape(mask)
    paddings = [[0, tf.maximum(height - size[0], 0)], [0, tf.maximum(width - size[1], 0)]]
    mean = tf.constant(MEAN_PIXEL_RGB, tf.float32)
    image = tf.pad(image - mean, [*paddings, [0, 0]]) + mean
    mask = tf.pad(mask, paddings, constant_values=IGNORE_LABEL)
    return image, mask


def augment_pair(
    image: tf.Tensor,
    mask: tf.Tensor,
    seed: tf.Tensor,
    *,
    crop_size: int,
    min_scale: float,
    max_scale: float,
    scale_step: float | None,
    flip: bool,
) -> tuple[tf.Tensor, tf.Tensor]:
    """(H, W, 3) uint8 image, (H, W) uint8 mask, (2,) int seed -> (crop, crop, 3) float32, (crop, crop) uint8."""
    draws = tf.random.stateless_uniform([4], seed=seed)
    scale = random_scale(draws[0], min_scale, max_scale, scale_step)
    scaled_size = tf.maximum(tf.cast(tf.round(tf.cast(tf.shape(mask), tf.float32) * scale), tf.int32), 1)
    room = tf.maximum(scaled_size - crop_size, 0)  # how far the crop can move inside the scaled pair
    offset = tf.cast(draws[1:3] * tf.cast(room + 1, tf.float32), tf.int32)
    window = tf.minimum(scaled_size - offset, crop_size)  # the crop's part inside the scaled pair
    image, mask = scaled_window(image, mask, scaled_size, offset, window)
    image, mask = pad_pair(image, mask, crop_size, crop_size)
    if flip:
        mirrored = draws[3] < 0.5
        image = tf.cond(mirrored, lambda: tf.reverse(image, [1]), lambda: image)
        mask = tf.cond(mirrored, lambda: tf.reverse(mask, [1]), lambda: mask)
    image.set_shape([crop_size, crop_size, 3])
    mask.set_shape([crop_size, crop_size])
    return image, mask
