#!/usr/bin/env python3
"""Convert a .keras DeepLab model to TFLite variants and check them against Keras.

The same as `keras-deeplab convert-tflite` (see `serving/tflite.py`), for example:

    python scripts/convert_tflite.py --model runs/demo/model.keras --out tflite --input-size 257
"""

import sys

from keras_deeplab.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert-tflite", *sys.argv[1:]]))
