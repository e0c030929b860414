"""What every weight reader returns and the error they raise."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Last name component of the variables a TF1 slim DeepLab holds (optimizer slots, global_step and the like
# end otherwise and are not weights).
VARIABLE_SUFFIXES = ("weights", "depthwise_weights", "biases", "gamma", "beta", "moving_mean", "moving_variance")
# What the importer reads, checked before reading (issue 24: a 148-byte tar.gz holding a sparse 12 GB frozen graph
# took past 8 GB). A GraphDef is a protobuf, which cannot exceed 2 GiB; the files of one tarball that are
# extracted (checkpoints and graphs only) may add up to 4 GiB, twice the largest model-zoo release's (Xception-71
# Cityscapes, under 1 GB unpacked); and a tarball may list this many entries.
MAX_GRAPH_BYTES = 2**31 - 1
MAX_EXTRACTED_BYTES = 4 * 2**30
MAX_TARBALL_MEMBERS = 10_000


class WeightImportError(ValueError):
    """A weight source that cannot become a DeepLab: unreadable, or with tensors that do not fit the model.
    The message names the file and the tensor or layer at fault."""


@dataclass
class SourceWeights:
    """Weights read from one published file.

    `tensors`: official TF1 variable name -> float32 array in TensorFlow's layout (conv kernels
    (kh, kw, in, out), depthwise kernels (kh, kw, C, 1)). A source whose batch norm was folded into its
    convolutions (TFLite) names each conv's bias `scope/biases`, like a conv that had one.
    `output_stride` and `input_size` (H, W): what the file itself says, when it says it. `atrous_rates`:
    {official kernel name: the rate its conv runs at}, where the file records how it computes (frozen graphs);
    `mapping` reads the output stride from them.
    """

    path: str
    kind: str
    tensors: dict[str, np.ndarray]
    output_stride: int | None = None
    input_size: tuple[int, int] | None = None
    atrous_rates: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def is_variable_name(name: str) -> bool:
    """Whether `name` looks like a weight variable of a TF1 slim model (not an optimizer slot or a constant)."""
    return name.rsplit("/", 1)[-1] in VARIABLE_SUFFIXES
