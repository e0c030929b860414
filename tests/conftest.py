"""Test setup shared by every test module.

TensorFlow's CPU is split into 2 logical devices before anything initialises TensorFlow, so that
MirroredStrategy tests run two real replicas (see ../shared/PLATFORM.md). Everything else sees device 0.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
import tensorflow as tf

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def pytest_collection_modifyitems(items):
    """Tests marked slow run first: `pytest -n 2` hands tests out in this order, so the suite does not end with one
    worker running a long test while the other has nothing left."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture
def shared_data_dir():
    """../shared/data beside the project root (real VOC/ADE20K samples), or skip when absent."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip("../shared/data is absent (a user's fresh clone has none): real-sample checks skipped")
    return os.path.abspath(SHARED_DATA)


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Each test starts from the default float32 policy and a clean Keras name scope."""
    import keras

    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
