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


# The seconds a test marked `slow` without a figure is taken to last, for the order below.
SLOW_SECONDS = 15


def expected_seconds(item) -> float:
    """`@pytest.mark.slow(seconds)`: about the seconds the test takes on 2 busy cores (`--durations`, rounded up);
    SLOW_SECONDS for a bare `slow` mark; 0 for the rest."""
    marker = item.get_closest_marker("slow")
    if marker is None:
        return 0
    return marker.args[0] if marker.args else SLOW_SECONDS


def pytest_collection_modifyitems(items):
    """Tests marked slow run first, the longest first: `pytest -n 2 --dist worksteal` hands the first half of this
    order to one worker and the second to the other, and an idle worker steals from the end of the other's queue,
    so the suite ends on short tests instead of one worker running a long test while the other has nothing left."""
    items.sort(key=lambda item: -expected_seconds(item))


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
