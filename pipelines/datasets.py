"""tf.data pipelines over a source: the endless augmented training batches and the full-size evaluation stream."""

from __future__ import annotations

import tensorflow as tf

from keras_deeplab import constants
from pipelines.augment import augment_pair
from pipelines.source import SegmentationSource, is_decoded

DEFAULT_SHUFFLE_BUFFER = 1024  # examples, for sources whose records are images rather than paths


def training_dataset(
    source: SegmentationSource,
    *,
    crop_size: int = constants.CROP_SIZE,
    batch_size: int,
    seed: int = 0,
    min_scale: float = constants.MIN_SCALE,
    max_scale: float = constants.MAX_SCALE,
    scale_step: float | None = constants.SCALE_STEP,
    flip: bool = True,
    cache: bool = False,
    shuffle_buffer: int | None = None,
) -> tf.data.Dataset:
    """Endless shuffled augmented batches: images float32 (B, crop, crop, 3) in [0, 255], masks uint8 (B, crop, crop).

    Decoding and augmentation run in parallel map calls; batches are whole (drop_remainder) so the dataset can be
    distributed with `strategy.experimental_distribute_dataset`. `seed` fixes the order and every crop.
    `cache` keeps the decoded examples in memory after the first pass. `shuffle_buffer` defaults to the whole
    source when its records are paths or indices, else DEFAULT_SHUFFLE_BUFFER.
    """
    if len(source) == 0:
        raise ValueError(f"{source.name}: no examples to train on")
    if shuffle_buffer is None:
        shuffle_buffer = len(source) if source.records_are_small or cache else DEFAULT_SHUFFLE_BUFFER
    records = source.records()
    if cache:
        examples = records.map(source.decode_record, num_parallel_calls=tf.data.AUTOTUNE).filter(is_decoded).cache()
        examples = examples.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
    else:
        records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True).repeat()
        examples = records.map(source.decode_record, num_parallel_calls=tf.data.AUTOTUNE).filter(is_decoded)

    def augment(index: tf.Tensor, example: tuple[tf.Tensor, tf.Tensor, tf.Tensor]):
        image, mask, _ = example
        return augment_pair(
            image,
            mask,
            tf.stack([tf.constant(seed, tf.int64), index]),
            crop_size=crop_size,
            min_scale=min_scale,
            max_scale=max_scale,
            scale_step=scale_step,
            flip=flip,
        )

    batches = examples.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    return batches.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE)


def evaluation_dataset(source: SegmentationSource) -> tf.data.Dataset:
    """Every example once, in order, at full size: (image float32 (1, H, W, 3), mask uint8 (1, H, W), name string).

    Nothing is resized, cropped or padded: every original pixel is kept.
    """

    def to_batch_of_one(image: tf.Tensor, mask: tf.Tensor, name: tf.Tensor):
        return tf.cast(image, tf.float32)[None], mask[None], name

    examples = source.records().map(source.decode_record, num_parallel_calls=tf.data.AUTOTUNE).filter(is_decoded)
    return examples.map(to_batch_of_one).prefetch(tf.data.AUTOTUNE)
