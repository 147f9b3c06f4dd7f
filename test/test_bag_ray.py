"""rt-panoptic-bag on Ray (``BAG... --output-dir DIR --ray``): one local cluster for the module.

The cluster (2 CPUs, no dashboard) is started once here and used by the tool as it is (the
tool joins an initialised Ray instead of starting its own), so each test pays only for its
workers: a process each that imports torch and loads the model. The outputs are checked
against the one-bag tool's as test_bag_fleet.py checks them; a worker is killed with SIGKILL
mid-bag; Ctrl-C is the main thread's KeyboardInterrupt, as a terminal's would be.
"""

from __future__ import annotations

import _thread
import importlib.util
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from test_bag_fleet import (
    MANIFEST,
    STAGING,
    SUMMARY,
    TOPIC,
    check_fleet_result,
    fleet_args,
    inputs,  # noqa: F401 (fixture)
    lines_of,
    make_bag,
    manifest_of,
    reference,  # noqa: F401 (fixture)
)

from rt_panoptic_ros.cli import bag_main

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install .[fleet]")

from rt_panoptic_ros.ros.bag.ray_runner import WorkerPlan, plan_workers  # noqa: E402 (needs Ray)

pytestmark = pytest.mark.slow

SEMANTIC = f"{TOPIC.rsplit('/', 1)[0]}/panoptic/semantic"


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """One local Ray cluster for the module (the tool joins it)."""
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    yield
    ray.shutdown()


def test_workers_follow_the_cluster():
    gpus = {"CPU": 32.0, "GPU": 4.0}
    assert plan_workers(gpus, None, None, 2, None, 100) == WorkerPlan(8, 2, 0.5, "cuda")
    assert plan_workers(gpus, "cuda:1", 3, 1, 4, 100) == WorkerPlan(3, 4, 1.0, "cuda")
    assert plan_workers(gpus, "cpu", None, 1, None, 100) == WorkerPlan(8, 4, 0.0, "cpu")
    assert plan_workers({"CPU": 2.0}, None, 2, 1, None, 100) == WorkerPlan(2, 1, 0.0, "cpu")
    assert plan_workers({"CPU": 2.0}, None, None, 1, None, 100) == WorkerPlan(2, 1, 0.0, "cpu")
    assert plan_workers({"CPU": 8.0}, None, None, 1, None, 100) == WorkerPlan(4, 2, 0.0, "cpu")
    assert plan_workers({"CPU": 64.0}, None, None, 1, None, 3).count == 3  # never more than the bags
    with pytest.raises(Exception, match="the Ray cluster has no GPU"):
        plan_workers({"CPU": 8.0}, "cuda", None, 1, None, 4)


def test_bags_on_ray_are_the_one_bag_tool_s_bags(inputs, reference, rigged_file, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "out"
    bags = [inputs[n] for n in ("alpha", "bad_metadata", "beta", "bad_db")]
    status = bag_main(
        fleet_args(bags, out, rigged_file, "--ray", "--workers", "2", "--threads-per-worker", "1")
    )
    lines = lines_of(capsys)
    assert status == 1, lines  # two bags failed; the others are done
    assert sum(ln.startswith("rt-panoptic-bag: failed ") for ln in lines) == 2, lines
    summary = check_fleet_result(out, inputs, reference, workers=None)
    execution = summary["execution"]
    assert (execution["mode"], execution["workers"], execution["threads_per_worker"]) == ("ray", 2, 1)
    workers = {b["worker"] for b in summary["bags"] if b["state"] == "done"}
    assert all(not w.endswith(f":{os.getpid()}") for w in workers)  # not this process: Ray's workers


def test_a_killed_worker_s_bag_is_retried(rigged_file, tmp_path, capsys):
    """SIGKILL to the worker process mid-bag: Ray restarts it, the bag is done again from scratch."""
    slow = make_bag(tmp_path / "slow", "mcap", 40, seed=4)
    out = tmp_path / "out"
    killed: list[str] = []

    def kill_mid_bag() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            record = manifest_of(out)["bags"].get("slow", {}) if (out / MANIFEST).exists() else {}
            if record.get("state") == "running" and any((out / STAGING).glob("slow.1/.slow.partial/slow/*")):
                time.sleep(0.5)  # a few frames in
                if manifest_of(out)["bags"]["slow"]["state"] == "running":
                    killed.append(record["worker"])
                    os.kill(int(record["worker"].rsplit(":", 1)[1]), signal.SIGKILL)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_mid_bag, daemon=True)
    killer.start()
    status = bag_main(fleet_args([slow], out, rigged_file, "--ray", "--workers", "1"))
    killer.join(timeout=5)
    lines = lines_of(capsys)
    assert killed, "the bag finished before the worker could be killed"
    assert status == 0, lines
    assert any(
        ln.startswith("rt-panoptic-bag: retrying slow (attempt 1 of 3 lost its worker") for ln in lines
    )
    record = manifest_of(out)["bags"]["slow"]
    assert (record["state"], record["attempts"], record["frames"]) == ("done", 2, 40)
    assert record["worker"] != killed[0]  # the restarted worker, a new process
    from test_bag import read_bag

    messages, _, metadata = read_bag(out / "slow")  # whole and valid
    assert len(messages[SEMANTIC]) == 40 and metadata["custom_data"]["rt_panoptic_ros.frames_written"] == "40"
    assert not (out / STAGING).exists() or not any((out / STAGING).iterdir())


def test_ctrl_c_on_ray_leaves_the_done_bags_and_a_true_manifest(inputs, rigged_file, tmp_path, capsys):  # noqa: F811
    long = make_bag(tmp_path / "long", "sqlite3", 60, seed=5)
    out = tmp_path / "out"

    def interrupt_when_long_runs() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            bags = manifest_of(out)["bags"] if (out / MANIFEST).exists() else {}
            if (
                bags.get("alpha", {}).get("state") == "done"
                and bags.get("long", {}).get("state") == "running"
            ):
                time.sleep(0.5)
                _thread.interrupt_main()  # what Ctrl-C in the terminal does to the driver
                return
            time.sleep(0.05)

    watcher = threading.Thread(target=interrupt_when_long_runs, daemon=True)
    watcher.start()
    status = bag_main(fleet_args([inputs["alpha"], long], out, rigged_file, "--ray", "--workers", "1"))
    watcher.join(timeout=5)
    lines = lines_of(capsys)
    assert status == 130, lines
    assert "interrupted: 2 bag(s)" in lines[-1]
    bags = manifest_of(out)["bags"]
    assert bags["alpha"]["state"] == "done" and (out / "alpha" / "metadata.yaml").is_file()
    assert bags["long"]["state"] == "pending" and "interrupted" in bags["long"]["error"]
    assert not Path(out / "long").exists()
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["interrupted"] and summary["bag_counts"]["done"] == 1


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT would load here")
def test_workers_that_cannot_load_the_model_say_why_and_leave_the_bags(inputs, rigged_file, tmp_path, capsys):  # noqa: F811
    """The tensorrt backend without TensorRT (as on CI): every worker fails to start."""
    out = tmp_path / "out"
    options = ("--ray", "--workers", "1", "--backend", "tensorrt")
    status = bag_main(fleet_args([inputs["alpha"]], out, rigged_file, *options))
    lines = lines_of(capsys)
    assert status == 1, lines
    assert any(
        ln.startswith("rt-panoptic-bag: a Ray worker could not start: tensorrt backend: ") for ln in lines
    )
    record = manifest_of(out)["bags"]["alpha"]
    assert record["state"] == "pending" and record["error"].startswith(
        "not run: no Ray worker left (tensorrt"
    )
    assert record["attempts"] == 0 and not (out / "alpha").exists()
