"""The lifecycle variant for real: its own process, driven through the lifecycle_msgs services.

One node process walks every transition (unconfigured -> inactive -> active -> inactive ->
unconfigured -> finalized, outputs checked in each); one shows a configure that fails.
"""

from __future__ import annotations

from conftest import wait_for

from rt_panoptic_ros.ros.testing.lifecycle_driver import OUTPUTS, TIMEOUT, Transition
from rt_panoptic_ros.ros.testing.lifecycle_driver import LifecycleDriver as Driver


def test_every_transition(context, model_file, tmp_path):
    log = tmp_path / "lifecycle.log"
    driver = Driver(context, "/lc1", {"model": str(model_file), "backend": "torch"}, log)
    try:
        assert driver.state() == "unconfigured"
        assert driver.transition(Transition.TRANSITION_CONFIGURE), driver.log_tail()
        assert driver.state() == "inactive"
        # Inactive: the outputs exist, the input does not; a frame sent gets nothing.
        assert wait_for(driver.recorder.connected, TIMEOUT), driver.log_tail()
        assert driver.camera.publisher.get_subscription_count() == 0
        assert driver.answered(driver.send(), 2.0) == []

        assert driver.transition(Transition.TRANSITION_ACTIVATE)
        assert driver.state() == "active"
        assert driver.camera.wait_for_subscriber(TIMEOUT, driver.process), driver.log_tail()
        driver.wait_answered()
        assert driver.answered(driver.send(), 20.0) == list(OUTPUTS)

        assert driver.transition(Transition.TRANSITION_DEACTIVATE)
        assert driver.state() == "inactive"
        assert wait_for(lambda: driver.camera.publisher.get_subscription_count() == 0, 10.0)
        assert driver.answered(driver.send(), 2.0) == []

        assert driver.transition(Transition.TRANSITION_CLEANUP)
        assert driver.state() == "unconfigured"
        # Configured again (the model loaded a second time), and shut down while active.
        assert driver.transition(Transition.TRANSITION_CONFIGURE), driver.log_tail()
        assert driver.transition(Transition.TRANSITION_ACTIVATE)
        driver.wait_answered()
        assert driver.transition(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        assert driver.process.wait(timeout=30) == 0, driver.log_tail()
    finally:
        code = driver.close()
    text = log.read_text()
    assert code == 0 and "Traceback" not in text, text[-3000:]
    assert text.count("MB before configure") >= 3, text[-3000:]
    assert "cleaned up: model and pipeline released" in text, text[-3000:]


def test_a_failed_configure_stays_unconfigured_with_the_reason(context, tmp_path):
    log = tmp_path / "lifecycle_fail.log"
    driver = Driver(context, "/lc2", {"model": "/nonexistent.pt", "backend": "torch"}, log)
    try:
        assert not driver.transition(Transition.TRANSITION_CONFIGURE)
        assert driver.state() == "unconfigured"
        assert wait_for(lambda: "configure failed: model:" in log.read_text(), 5.0), driver.log_tail()
        line = next(x for x in log.read_text().splitlines() if "configure failed" in x)
        assert "nonexistent.pt" in line
        assert driver.transition(Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert driver.process.wait(timeout=30) == 0, driver.log_tail()
    finally:
        code = driver.close()
    assert code == 0 and "Traceback" not in log.read_text(), driver.log_tail()
