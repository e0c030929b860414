"""Training a recipe under tf.distribute, resumable from atomic checkpoints (`keras-deeplab train`).

One module per job: `strategy` (distribution and precision), `step` (model, optimizer, the SGD step), `inputs`
(the recipe's data, split over replicas), `run` (the loop, checkpoints, evaluation, the run folder). A run folder
holds everything of a run:
  recipe.json                  the checked recipe it was started with
  checkpoints/ckpt-00001000/   model, optimizer (step, momentum, learning-rate position), model.json
  logs/train, logs/eval        TensorBoard events: loss, learning rate, images, mIoU
  model.keras                  the final model (single device, float32 policy)
  result.json                  written last: the finished step and the evaluation
Every file and checkpoint folder is written under a temporary name and renamed, so killing the process at
any moment (even `kill -9`) leaves the last complete checkpoint, and running the same command resumes there.
A run whose result.json records its final step is not redone.
"""

from keras_deeplab.training.run import train

__all__ = ["train"]
