"""The numbers of the DeepLab papers, in one place.

Sources: DeepLab v1 (Chen et al., arXiv 1412.7062), v2 (arXiv 1606.00915), DeepLabv3 (arXiv 1706.05587), DeepLabv3+
(arXiv 1802.02611). Nothing else in the project
hard-codes these values. The facts of each dataset (class names, colours, label maps, splits) are its
descriptor's, in `keras_deeplab.descriptors`.
"""

from __future__ import annotations

# Labels.
IGNORE_LABEL = 255  # VOC's "void" (object boundaries, unlabelled); never a class, never counted.

# Training crops and augmentation (v3 paper, section 4).
CROP_SIZE = 513
MIN_SCALE = 0.5
MAX_SCALE = 2.0
SCALE_STEP = 0.25
MEAN_PIXEL_RGB = (127.5, 127.5, 127.5)  # image padding value of the official code's input pipeline

# Model widths.
ASPP_FILTERS = 256
DECODER_FILTERS = 256
DECODER_LOW_LEVEL_FILTERS = 48
ASPP_DROPOUT_RATE = 0.1  # the official code's keep_prob 0.9 after the ASPP projection

# Atrous rates. The ASPP rates are (6, 12, 18) at output stride 16 and double at 8 (v3 paper, 3.3).
OUTPUT_STRIDES = (8, 16, 32)
ASPP_RATES_AT_OUTPUT_STRIDE_16 = (6, 12, 18)
MULTI_GRID = (1, 2, 4)  # unit rates of block4 and the cascaded copies (v3 paper, Table 3 / 7)
MAX_EXTRA_BLOCKS = 3  # block5..block7 of the cascade model (v3 paper, Table 2)

# Batch norm: decay 0.9997 and epsilon 1e-5 as in the official training; keras.applications' ResNets
# were trained with epsilon 1.001e-5, which the backbone keeps so that their weight files load exactly.
BATCH_NORM_MOMENTUM = 0.9997
BATCH_NORM_EPSILON = 1e-5
RESNET_BATCH_NORM_EPSILON = 1.001e-5

# ResNet v1 bottleneck units per stage (conv2_x .. conv5_x).
RESNET_STAGE_BLOCKS = {"resnet50": (3, 4, 6, 3), "resnet101": (3, 4, 23, 3)}
RESNET_STAGE_FILTERS = (64, 128, 256, 512)  # bottleneck width; the stage outputs 4x as many channels
RESNET_STEMS = ("keras", "beta")
# Where a ResNet unit strides: "keras" (keras.applications: the first 1x1 conv of a stage's first unit) or "slim"
# (tf-slim's resnet_v1 and DeepLab's resnet_v1_beta: the 3x3 conv of a block's last unit), see backbones/resnet.py.
RESNET_LAYOUTS = ("keras", "slim")
# The official DeepLab's ResNet-v1 (not beta) input: the ImageNet mean subtracted in RGB order
# (tensorflow/models research/deeplab/core/feature_extractor.py, `_MEAN_RGB`); the beta variant's is [-1, 1].
OFFICIAL_RESNET_MEAN_RGB = (123.15, 115.90, 103.06)
# keras.applications' ResNets expect "caffe" inputs: BGR order, ImageNet mean subtracted, no scaling.
RESNET_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


def aspp_rates(output_stride: int) -> tuple[int, int, int]:
    """ASPP atrous rates at `output_stride`: (6, 12, 18) at 16, (12, 24, 36) at 8, (3, 6, 9) at 32."""
    check_output_stride(output_stride)
    return tuple(rate * 16 // output_stride for rate in ASPP_RATES_AT_OUTPUT_STRIDE_16)


def check_output_stride(output_stride: int) -> None:
    """Raise ValueError unless `output_stride` is one of OUTPUT_STRIDES."""
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride!r}")


# Xception and MobileNetV2 expect "tf" inputs: RGB scaled to [-1, 1], i.e. (x - 127.5) / 127.5.
SIGNED_UNIT_PIXEL_MEAN_RGB = (127.5, 127.5, 127.5)
SIGNED_UNIT_PIXEL_SCALE = 1 / 127.5

# The modified aligned Xception-65 of the v3+ paper (section 3.2, Fig. 4; the official `xception_65`):
# two stem convs, then (flow, block, units, widths of the unit's three separable convs, stride of the unit's
# last separable conv, skip connection: "conv" = strided 1x1 conv + BN, "sum" = identity, "none").
XCEPTION65_STEM_FILTERS = (32, 64)
XCEPTION65_BLOCKS = (
    ("entry_flow", 1, 1, (128, 128, 128), 2, "conv"),
    ("entry_flow", 2, 1, (256, 256, 256), 2, "conv"),
    ("entry_flow", 3, 1, (728, 728, 728), 2, "conv"),
    ("middle_flow", 1, 16, (728, 728, 728), 1, "sum"),
    ("exit_flow", 1, 1, (728, 1024, 1024), 2, "conv"),
    ("exit_flow", 2, 1, (1536, 1536, 2048), 1, "none"),
)

# MobileNetV2 (arXiv 1801.04381, Table 2) as keras.applications builds it: (expansion t, width c, repeats n,
# stride s of the first repeat). DeepLab stops before the final 1x1 conv to 1280 channels (the official
# `layer_18`); its decoder reads the depthwise output of block 2 (the official `layer_4/depthwise_output`).
MOBILENETV2_STEM_FILTERS = 32
MOBILENETV2_BLOCKS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
MOBILENETV2_LOW_LEVEL_BLOCK = 2
MOBILENETV2_WIDTH_DIVISOR = 8  # keras.applications rounds every scaled width to a multiple of 8
MOBILENETV2_BATCH_NORM_EPSILON = 1e-3  # keras.applications' value, kept so its weight files load exactly
MOBILENETV2_UNUSED_WEIGHT_LAYERS = ("Conv_1", "Conv_1_bn")  # the no-top file's final 1x1 conv to 1280 channels

# VGG-16 as DeepLab v1 modifies it (the official deeplab-public exper/voc12/config/deeplab_largeFOV/train.prototxt,
# read in the copy github.com/corenel/deeplab-public @ad566e9): conv widths per block, 3x3 max pooling with padding
# 1 after every block (pool1..pool3 at stride 2, pool4 and pool5 at stride 1), conv5 dilated by 2: output stride 8.
# keras.applications' VGG16 expects "caffe" inputs like its ResNets (BGR, ImageNet mean subtracted).
VGG16_CAFFE_MEAN_BGR = RESNET_CAFFE_MEAN_BGR
VGG16_BLOCKS = ((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))  # (filters, convs) of block1..block5
VGG16_LOW_LEVEL_BLOCK = 2  # the v3+ decoder reads block2's pooled output (block3's input), stride 4
VGG16_UNUSED_WEIGHT_LAYERS = ("fc1", "fc2", "predictions")  # the include_top file's classifier, read as fc6/fc7
VGG16_FC_SIZE = 7  # keras.applications' fc1 sees block5's 7x7x512 pooled map of a 224x224 image
VGG16_FC_WIDTH = 4096

# The heads of v1 and v2 (no batch norm): `head="largefov"` (v1) puts fc6 (kernel, rate, filters) + ReLU +
# dropout, fc7 (1x1, the same width) + ReLU + dropout and fc8 (1x1 to the classes) on the stride-8 feature. The
# v1 paper's field-of-view table (Table 2) names four fc6 settings; DeepLab-LargeFOV is the last.
V1_DROPOUT_RATE = 0.5
V1_CLASSIFIER_INIT_STD = 0.01  # fc8's Gaussian weight filler in the official prototxts
LARGEFOV_FC6 = (3, 12, 1024)  # DeepLab-LargeFOV: 3x3 kernel at rate 12, 1024 filters
V1_FC6_VARIANTS = {
    "DeepLab-CRF-7x7": (7, 4, 4096),
    "DeepLab-CRF": (4, 4, 4096),
    "DeepLab-CRF-4x4": (4, 8, 4096),
    "DeepLab-CRF-LargeFOV": LARGEFOV_FC6,
}
# v1 Table 2's parameter counts for 21 classes, in millions.
V1_FC6_VARIANT_PARAMETERS = {
    "DeepLab-CRF-7x7": 134.3,
    "DeepLab-CRF": 65.1,
    "DeepLab-CRF-4x4": 65.1,
    "DeepLab-CRF-LargeFOV": 20.5,
}
# v2's ASPP (`head="aspp_v2"`): parallel branches at these rates whose class scores are summed (v2 section 3.1,
# Fig. 4; rates at output stride 8).
ASPP_L_RATES = (6, 12, 18, 24)
ASPP_S_RATES = (2, 4, 8, 12)
HEADS = ("aspp", "largefov", "aspp_v2")
# v2's multi-scale inputs ("MSC"): the image at these scales through one shared network, max-fused.
MSC_SCALES = (1.0, 0.75, 0.5)

# The fully connected CRF of DeepLab v1/v2 (Kraehenbuehl & Koltun, NIPS 2011), mean-field post-processing.
# Defaults: the official DeepLab v2 code's `exper/run_densecrf.sh` (deeplab-public-ver2, read in the copies
# github.com/talent518/deeplab-public-ver2 @0d878f3 and github.com/yangyi02/segmentation_attention @215968b):
# MAX_ITER=10, Bi_W=4, Bi_X_STD=Bi_Y_STD=49, Bi_R_STD=Bi_G_STD=Bi_B_STD=5, POS_W=3, POS_X_STD=POS_Y_STD=3, the
# VOC 2012 values for its VGG-16 model. Stds are in pixels and in 0-255 intensity levels.
DENSE_CRF = {
    "iterations": 10,
    "bi_w": 4.0,  # weight of the appearance kernel (position + RGB)
    "bi_xy_std": 49.0,
    "bi_rgb_std": 5.0,
    "pos_w": 3.0,  # weight of the smoothness kernel (position only)
    "pos_xy_std": 3.0,
}
# The DeepLab v2 ResNet-101 release's values (its test.prototxt DenseCRF layer: max_iter 10, pos_w 3,
# pos_xy_std 1, bi_w 4, bi_xy_std 67, bi_rgb_std 3), known only second-hand here: that file is not in any
# source this project could read; repeated e.g. by github.com/kazuto1011/deeplab-pytorch configs/voc12.yaml.
DENSE_CRF_RESNET101 = {
    "iterations": 10,
    "pos_w": 3.0,
    "pos_xy_std": 1.0,
    "bi_w": 4.0,
    "bi_xy_std": 67.0,
    "bi_rgb_std": 3.0,
}
# The CRF's parameters are searched on a validation split, as the papers did (v1 section 4.1: w2 = 3 and
# sigma_gamma = 3 fixed, w1, sigma_alpha and sigma_beta searched by cross-validation); this coarse grid around the
# defaults keeps the search to 18 CRF runs per image on a CPU (`keras-deeplab evaluate --crf-search`).
DENSE_CRF_SEARCH_GRID = {"bi_w": (3.0, 4.0, 5.0), "bi_xy_std": (30.0, 50.0, 70.0), "bi_rgb_std": (3.0, 5.0)}

# Boundary accuracy ("trimap"): mIoU over the pixels within a band of this many pixels around label boundaries
# (DeepLab v1 section 5, v3+ Fig. 5, which plot band widths from 0 to 40 pixels).
TRIMAP_WIDTHS = (4, 8, 16, 32)

# Arithmetic (`keras_deeplab.precision`): float32; "mixed" (float16 on GPUs, bfloat16 on CPUs, float32 variables);
# "auto" (mixed where it is native: any GPU, CPUs with AVX512_BF16 or AMX; float32 elsewhere).
PRECISIONS = ("float32", "mixed", "auto")
