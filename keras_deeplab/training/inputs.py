"""The recipe's data: its train and eval sources, and the training stream split over replicas."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from keras_deeplab.recipe import Recipe, RecipeError
from pipelines.datasets import training_dataset
from pipelines.formats import open_source
from pipelines.source import SegmentationSource


def open_sources(recipe: Recipe) -> tuple[SegmentationSource, SegmentationSource]:
    """(train source, eval source) of the recipe, each checked to hold at least one example."""
    data = recipe.data
    sources = []
    for format, split in ((data.format, data.train_split), (data.eval_format or data.format, data.eval_split)):
        source = open_source(format, data.root, split, **data.options)
        if len(source) == 0:
            raise ValueError(
                f"{recipe.source}: data format {format!r} at {data.root!r}, split {split!r}: "
                "the dataset has no examples"
            )
        if source.num_classes != recipe.num_classes:
            raise RecipeError(
                f"{recipe.source}: model.num_classes is {recipe.num_classes} but {source.name} has "
                f"{source.num_classes} classes"
            )
        sources.append(source)
    return sources[0], sources[1]


def distributed_training_data(
    strategy: tf.distribute.Strategy, source: SegmentationSource, recipe: Recipe, start_step: int
) -> tf.distribute.DistributedDataset:
    """The training pipeline split over replicas: each input pipeline (one per worker) reads its own part of
    the source (by file for TFRecord shards when there are at least as many as workers, else by record: see
    pipelines.datasets.shard_policy) and makes batches of global_batch_size / replicas from its own seed,
    derived from the recipe's seed, the step it starts at and its index (so a resumed run draws new crops
    rather than repeating the first ones)."""

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        seed = int(
            np.random.SeedSequence([recipe.train.seed, start_step, context.input_pipeline_id]).generate_state(1)[0]
        )
        return training_dataset(
            source,
            crop_size=recipe.data.crop_size,
            batch_size=context.get_per_replica_batch_size(recipe.train.global_batch_size),
            seed=seed,
            min_scale=recipe.data.min_scale,
            max_scale=recipe.data.max_scale,
            scale_step=recipe.data.scale_step,
            flip=recipe.data.flip,
            cache=recipe.data.cache,
            num_shards=context.num_input_pipelines,
            shard_index=context.input_pipeline_id,
        )

    return strategy.distribute_datasets_from_function(dataset_fn)
