"""tf.data pipelines over a source: the endless augmented training batches and the full-size evaluation stream."""

from __future__ import annotations

import tensorflow as tf

from keras_deeplab import constants
from pipelines.augment import augment_pair
from pipelines.source import SegmentationSource, is_decoded

DEFAULT_SHUFFLE_BUFFER = 1024  # examples, for sources whose records are images rather than paths
AutoShardPolicy = tf.data.experimental.AutoShardPolicy


def shard_policy(source: SegmentationSource, num_shards: int) -> AutoShardPolicy:
    """How `num_shards` input pipelines (the workers of a cluster) split `source`: FILE (each reads whole files
    of its own) when the source reads files (TFRecord shards) and has at least one per pipeline, DATA (each
    keeps every num_shards-th record) otherwise; OFF for a single pipeline."""
    if num_shards == 1:
        return AutoShardPolicy.OFF
    return AutoShardPolicy.FILE if len(source.files) >= num_shards else AutoShardPolicy.DATA


def shard_records(source: SegmentationSource, num_shards: int = 1, index: int = 0) -> tf.data.Dataset:
    """The records of input pipeline `index` of `num_shards`, split by `shard_policy`. Split here, before the
    shuffle and the decoding, so that no pipeline decodes an example another one trains on."""
    if not 0 <= index < num_shards:
        raise ValueError(f"shard index must be in [0, {num_shards}), got {index}")
    policy = shard_policy(source, num_shards)
    if policy == AutoShardPolicy.FILE:
        return source.records_of_files(source.files[index::num_shards])
    records = source.records()
    return records.shard(num_shards, index) if policy == AutoShardPolicy.DATA else records


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
    num_shards: int = 1,
    shard_index: int = 0,
) -> tf.data.Dataset:
    """Endless shuffled augmented batches: images float32 (B, crop, crop, 3) in [0, 255], masks uint8 (B, crop, crop).

    Decoding and augmentation run in parallel map calls; batches are whole (drop_remainder) so the dataset can be
    distributed with `strategy.experimental_distribute_dataset`. `seed` fixes the order and every crop.
    `cache` keeps the decoded examples in memory after the first pass. `shuffle_buffer` defaults to the whole
    source when its records are paths or indices, else DEFAULT_SHUFFLE_BUFFER. `num_shards` / `shard_index`:
    the input pipeline's part of the source when several pipelines (workers) read it (see `shard_records`);
    the dataset is marked as sharded already (tf.distribute's auto-sharding OFF), so nothing shards it again.
    """
    if len(source) == 0:
        raise ValueError(f"{source.name}: no examples to train on")
    if shuffle_buffer is None:
        shuffle_buffer = len(source) if source.records_are_small or cache else DEFAULT_SHUFFLE_BUFFER
    records = shard_records(source, num_shards, shard_index)
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
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = AutoShardPolicy.OFF  # split by shard_records already
    return batches.batch(batch_size, drop_remainder=True).prefetch(tf.data.AUTOTUNE).with_options(options)


def evaluation_dataset(source: SegmentationSource) -> tf.data.Dataset:
    """Every example once, in order, at full size: (image float32 (1, H, W, 3), mask uint8 (1, H, W), name string).

    Nothing is resized, cropped or padded: every original pixel is kept.
    """

    def to_batch_of_one(image: tf.Tensor, mask: tf.Tensor, name: tf.Tensor):
        return tf.cast(image, tf.float32)[None], mask[None], name

    examples = source.records().map(source.decode_record, num_parallel_calls=tf.data.AUTOTUNE).filter(is_decoded)
    return examples.map(to_batch_of_one).prefetch(tf.data.AUTOTUNE)
