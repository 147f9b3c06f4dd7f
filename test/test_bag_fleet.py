"""rt-panoptic-bag over many bags in one process (``BAG... --output-dir DIR``): outputs, manifest, restart.

The outputs are compared message for message with what the one-bag tool (``IN OUT``, checked
by test_bag.py) writes for the same input. The run on Ray is test_bag_ray.py; both share
the bag builders here.
"""

from __future__ import annotations

import fcntl
import json
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image
from test_bag import H, W, raw_image, read_bag, write_bag
from vision_msgs.msg import Detection2DArray, LabelInfo

from rt_panoptic_ros.cli import bag_main
from rt_panoptic_ros.ros.bag.fleet_manifest import MANIFEST, STAGING, SUMMARY, worker_name

TOPIC = "/cam/image"
MESSAGE_TYPES = {"semantic": Image, "instance": Image, "overlay": Image, "detections": Detection2DArray,
                 "label_info": LabelInfo}  # fmt: skip


def make_bag(path: Path, storage: str, frames: int, seed: int = 0, corrupt: tuple[int, ...] = ()) -> Path:
    """A bag of ``frames`` random rgb8 frames on :data:`TOPIC`; frames in ``corrupt`` are truncated CDR."""
    rng = np.random.default_rng(seed)
    raws = [raw_image(k, rng.integers(0, 256, (H, W, 3), dtype=np.uint8), "rgb8") for k in range(frames)]
    for k in corrupt:
        raws[k] = raws[k][:60]
    write_bag(path, storage, {TOPIC: ("sensor_msgs/msg/Image", raws)})
    return path


def corrupt_bags(folder: Path, like: Path) -> tuple[Path, Path]:
    """Two bags that cannot be read: garbage ``metadata.yaml``; valid metadata over a garbage database."""
    metadata = folder / "bad_metadata"
    metadata.mkdir(parents=True)
    (metadata / "metadata.yaml").write_text("rosbag2_bagfile_information: [garbage")
    database = folder / "bad_db"
    database.mkdir()
    (database / "metadata.yaml").write_text((like / "metadata.yaml").read_text().replace(like.name, "bad_db"))
    (database / "bad_db_0.db3").write_bytes(b"this is not an sqlite3 database" * 100)
    return metadata, database


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """Two good bags (sqlite3; mcap with one corrupt frame) and two unreadable ones."""
    folder = tmp_path_factory.mktemp("fleet_inputs")
    bags = {
        "alpha": make_bag(folder / "alpha", "sqlite3", 4, seed=1),
        "beta": make_bag(folder / "beta", "mcap", 5, seed=2, corrupt=(2,)),
    }
    bags["bad_metadata"], bags["bad_db"] = corrupt_bags(folder, bags["alpha"])
    return bags


@pytest.fixture(scope="module")
def reference(inputs, rigged_file, tmp_path_factory) -> Path:
    """The one-bag tool's outputs of the good bags, in ``<folder>/<name>`` like a fleet's."""
    folder = tmp_path_factory.mktemp("fleet_reference")
    for name in ("alpha", "beta"):
        args = [
            inputs[name],
            folder / name,
            "--image-topic",
            TOPIC,
            "--model",
            rigged_file,
            "--backend",
            "torch",
        ]
        assert bag_main([str(a) for a in args]) == 0
    return folder


def fleet_args(bags, out: Path, model: Path, *extra) -> list[str]:
    return [str(a) for a in (*bags, "--output-dir", out, "--image-topic", TOPIC, "--model", model,
                             "--backend", "torch", *extra)]  # fmt: skip


def lines_of(capsys) -> list[str]:
    """stderr's lines, the progress view's dropped."""
    err = capsys.readouterr().err
    return [ln for ln in re.split(r"[\r\n]", err) if ln.strip() and not ln.startswith("bags ")]


def assert_same_bag(made: Path, expected: Path) -> None:
    """Message for message, topic for topic, the same bag (custom_data included)."""
    messages, connections, metadata = read_bag(made)
    want_messages, want_connections, want_metadata = read_bag(expected)
    assert set(messages) == set(want_messages)
    for topic in messages:  # decoded: rclpy leaves CDR's padding bytes uninitialised
        kind = MESSAGE_TYPES[topic.rsplit("/", 1)[1]]
        assert [t for t, _ in messages[topic]] == [t for t, _ in want_messages[topic]], topic
        for (_, raw), (_, want) in zip(messages[topic], want_messages[topic], strict=True):
            assert deserialize_message(raw, kind) == deserialize_message(want, kind), topic
        assert connections[topic].digest == want_connections[topic].digest
        assert connections[topic].ext.offered_qos_profiles == want_connections[topic].ext.offered_qos_profiles
    assert metadata["custom_data"] == want_metadata["custom_data"]
    assert metadata["message_count"] == want_metadata["message_count"]
    assert metadata["storage_identifier"] == want_metadata["storage_identifier"]


def manifest_of(out: Path) -> dict:
    return json.loads((out / MANIFEST).read_text())


def check_fleet_result(out: Path, inputs: dict[str, Path], reference: Path, workers: set[str] | None) -> dict:
    """The two good bags done as the one-bag tool does them; the two bad ones failed, with nothing
    written; manifest and summary agree. Returns the summary."""
    for name in ("alpha", "beta"):
        assert_same_bag(out / name, reference / name)
    assert not (out / "bad_metadata").exists() and not (out / "bad_db").exists()
    assert not (out / STAGING).exists() or not any((out / STAGING).iterdir())
    bags = manifest_of(out)["bags"]
    assert {n: b["state"] for n, b in bags.items()} == {
        "alpha": "done", "beta": "done", "bad_metadata": "failed", "bad_db": "failed",
    }  # fmt: skip
    assert (bags["alpha"]["frames"], bags["alpha"]["skipped"]) == (4, 0)
    assert (bags["beta"]["frames"], bags["beta"]["skipped"]) == (4, 1)
    assert bags["alpha"]["input"] == str(inputs["alpha"].resolve())
    assert bags["alpha"]["output"] == str(out / "alpha")
    assert "not rosbag2 metadata" in bags["bad_metadata"]["error"]
    assert str(inputs["bad_db"]) in bags["bad_db"]["error"]
    for name in ("alpha", "beta"):
        assert bags[name]["attempts"] == 1 and bags[name]["seconds"] > 0 and bags[name]["error"] is None
        assert re.fullmatch(r".+:\d+", bags[name]["worker"])
        if workers is not None:
            assert bags[name]["worker"] in workers
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["bag_counts"] == {"total": 4, "done": 2, "done_before": 0, "failed": 2, "pending": 0}
    assert summary["frames"] == 8 and summary["skipped_frames"] == 1
    by_name = {b["name"]: b for b in summary["bags"]}
    [skipped] = by_name["beta"]["skipped_frames"]
    assert skipped.startswith("skipped the frame at bag time 1700000000.205000000 (+0.200 s): not a valid ")
    for name in ("alpha", "beta"):  # per bag: frames, skipped frames, seconds, worker
        assert {k: by_name[name][k] for k in ("frames", "skipped", "seconds", "worker")} == {
            k: bags[name][k] for k in ("frames", "skipped", "seconds", "worker")
        }
    return summary


# --- one process ------------------------------------------------------------------------------------


def test_many_bags_as_the_one_bag_tool_writes_them_and_a_rerun_skips_the_done(
    inputs, reference, rigged_file, tmp_path, capsys
):
    out = tmp_path / "out"
    bags = [inputs[n] for n in ("alpha", "bad_metadata", "beta", "bad_db")]
    status = bag_main(fleet_args(bags, out, rigged_file))
    lines = lines_of(capsys)
    assert status == 1, lines  # a bag failed; the others are done
    failed = [ln for ln in lines if ln.startswith("rt-panoptic-bag: failed ")]
    assert len(failed) == 2 and "bad_metadata" in failed[0] and "bad_db" in failed[1], lines
    assert any("beta: skipped the frame at bag time 1700000000.205000000" in ln for ln in lines), lines
    assert lines[-1].startswith(f"rt-panoptic-bag: wrote 4 bag(s) in {out}: 2 done, 2 failed;"), lines
    summary = check_fleet_result(out, inputs, reference, {worker_name()})
    assert summary["execution"]["mode"] == "sequential"
    assert "--output-dir" in summary["command"]

    # A re-run: the done bags are not touched, the failed ones are tried again (and fail again).
    files = [out / "alpha" / "alpha.db3", out / "beta" / "beta.mcap"]
    stored = [f.stat().st_ino for f in files]
    status = bag_main(fleet_args(bags, out, rigged_file))
    lines = lines_of(capsys)
    assert status == 1
    assert "4 bag(s): 2 done before, 2 cannot be processed, 0 to process" in lines[2], lines
    assert lines[-1].startswith(
        f"rt-panoptic-bag: wrote 4 bag(s) in {out}: 2 done (2 before this run), 2 failed"
    )
    assert [f.stat().st_ino for f in files] == stored
    bags_after = manifest_of(out)["bags"]
    assert bags_after["bad_db"]["attempts"] == 2 and bags_after["alpha"]["attempts"] == 1
    assert json.loads((out / SUMMARY).read_text())["bag_counts"]["done_before"] == 2


def test_a_rerun_redoes_an_unfinished_bag_from_scratch(inputs, reference, rigged_file, tmp_path, capsys):
    """As a run killed mid-bag leaves the folder: the bag ``running``, its attempt's staging
    folder half-written (and here even a whole bag under its name, moved there just before the
    kill, before the manifest said so)."""
    out = tmp_path / "out"
    assert bag_main(fleet_args([inputs["alpha"]], out, rigged_file)) == 0
    manifest = manifest_of(out)
    manifest["bags"]["alpha"]["state"] = "running"
    (out / MANIFEST).write_text(json.dumps(manifest))
    half = out / STAGING / "alpha.1" / ".alpha.partial" / "alpha"
    half.mkdir(parents=True)
    (half / "alpha_0.db3").write_bytes(b"half a bag")
    before = (out / "alpha" / "alpha.db3").stat().st_ino
    capsys.readouterr()

    assert bag_main(fleet_args([inputs["alpha"]], out, rigged_file)) == 0
    lines = lines_of(capsys)
    assert "0 done before, 1 to process" in lines[0], lines
    assert (out / "alpha" / "alpha.db3").stat().st_ino != before  # redone, not kept
    assert_same_bag(out / "alpha", reference / "alpha")
    assert not (out / STAGING).exists() or not any((out / STAGING).iterdir())
    record = manifest_of(out)["bags"]["alpha"]
    assert (record["state"], record["attempts"], record["frames"]) == ("done", 2, 4)


def test_ctrl_c_leaves_the_done_bags_and_a_true_manifest(inputs, rigged_file, tmp_path):
    """A real process, a real SIGINT while the second bag is being segmented."""
    long = make_bag(tmp_path / "long", "mcap", 200, seed=3)
    out = tmp_path / "out"
    exe = Path(sys.executable).with_name("rt-panoptic-bag")
    process = subprocess.Popen(
        [str(exe), *fleet_args([inputs["alpha"], long], out, rigged_file)], stderr=subprocess.PIPE, text=True
    )
    err: list[str] = []
    reader = threading.Thread(target=lambda: err.extend(iter(process.stderr.readline, "")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        with_running = (out / MANIFEST).exists() and manifest_of(out)["bags"].get("long", {}).get("state")
        if with_running == "running" and (out / STAGING / "long.1").exists():
            break
        time.sleep(0.1)
    time.sleep(1.0)  # a few frames into it
    assert process.poll() is None, "".join(err)
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=60) == 130
    reader.join(timeout=5)
    text = "".join(err)
    assert "Traceback" not in text
    assert "interrupted: 2 bag(s)" in text.strip().splitlines()[-1]
    bags = manifest_of(out)["bags"]
    assert bags["alpha"]["state"] == "done" and (out / "alpha" / "metadata.yaml").is_file()
    messages, _, _ = read_bag(out / "alpha")  # valid
    assert len(messages[f"{TOPIC.rsplit('/', 1)[0]}/panoptic/semantic"]) == 4
    assert bags["long"]["state"] == "pending" and "interrupted" in bags["long"]["error"]
    assert not (out / "long").exists()  # nothing half-done under its name
    assert not (out / STAGING).exists() or not any((out / STAGING).iterdir())
    summary = json.loads((out / SUMMARY).read_text())
    assert summary["interrupted"] and summary["bag_counts"]["pending"] == 1


# --- refusals: one line each ----------------------------------------------------------------------


def one_error(status: int, lines: list[str], *needles: str) -> str:
    assert status == 1, lines
    errors = [ln for ln in lines if ln.startswith("rt-panoptic-bag: error: ")]
    assert len(errors) == 1, lines
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def test_runs_that_cannot_start_say_why_in_one_line(inputs, rigged_file, tmp_path, capsys, monkeypatch):
    alpha = inputs["alpha"]
    twin = tmp_path / "elsewhere" / "alpha"
    shutil.copytree(alpha, twin)
    status = bag_main(fleet_args([alpha, twin], tmp_path / "dup", rigged_file))
    one_error(status, lines_of(capsys), "given by more than one input bag, e.g. alpha")

    taken = tmp_path / "taken"
    shutil.copytree(alpha, taken / "alpha")  # a bag this tool did not write there
    error = f"{taken / 'alpha'} exists and {taken / MANIFEST} does not record it; pass --overwrite"
    one_error(bag_main(fleet_args([alpha], taken, rigged_file)), lines_of(capsys), error)

    out = tmp_path / "out"
    out.mkdir()
    with open(out / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        one_error(bag_main(fleet_args([alpha], out, rigged_file)), lines_of(capsys), "another run is writing")
    (out / MANIFEST).write_text(json.dumps({
        "format": "rt_panoptic_ros.fleet/1", "settings": {"image_topic": "/other"}, "bags": {},
    }))  # fmt: skip
    error = "made with other settings (image_topic: '/other', now '/cam/image')"
    one_error(bag_main(fleet_args([alpha], out, rigged_file)), lines_of(capsys), error, "--overwrite to redo")

    one_error(bag_main(fleet_args([alpha], out, rigged_file, "--ray", alpha)), lines_of(capsys),
              "that is a path, not a cluster address")  # fmt: skip
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    error = one_error(bag_main(fleet_args([alpha], out, rigged_file, "--ray")), lines_of(capsys))
    assert error == (
        "rt-panoptic-bag: error: --ray needs Ray, an optional extra: pip install 'rt_panoptic_ros[fleet]' "
        "(or pip install ray==2.60.0)"
    )


def test_many_bag_options_need_an_output_dir(inputs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        bag_main([str(inputs["alpha"]), str(tmp_path / "o"), "--image-topic", TOPIC, "--ray"])
    assert exit_.value.code == 2
    assert "--ray: only with --output-dir DIR" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bag_main([str(inputs["alpha"]), str(inputs["beta"]), str(tmp_path / "o"), "--image-topic", TOPIC])
    assert "give IN OUT (one bag), or BAG... --output-dir DIR" in capsys.readouterr().err
