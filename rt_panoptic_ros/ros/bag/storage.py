"""Reading and writing rosbag2 files (sqlite3 and mcap) with ``rosbags``, for ``rt-panoptic-bag``.

``rosbags`` reads and writes both storage formats without ROS installed (``rosbag2_py``
cannot be installed from PyPI). Its own message classes differ from rclpy's, so this module
deals in raw CDR bytes only: the bag tool turns them into real rclpy messages with
``rclpy.serialization`` and back, and the node's conversion functions apply unchanged.

- :class:`InputBag`: an opened bag, its storage format, its image topics, the messages of
  one image topic in a time range; every way of not being a readable bag is one
  :class:`BagError` line.
- :class:`OutputBag`: a new bag in a given storage format whose topics carry their message
  definitions and RIHS01 type hashes (``ros2 bag info``, ``ros2 bag play`` and Foxglove
  need them), written by :func:`output_typestore`.
- :func:`check_output_path`: refuses to replace anything but an old bag.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from rosbags.interfaces import (
    Connection,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

from rt_panoptic_ros.errors import RTPanopticError, first_line

#: The message types an input topic may have (what the node subscribes to).
IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
#: Storage formats by the name ``metadata.yaml`` gives them, and by file suffix.
STORAGE_NAMES = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
_STORAGE_SUFFIXES = {".db3": StoragePlugin.SQLITE3, ".mcap": StoragePlugin.MCAP}
#: What an old bag directory may hold for ``--overwrite`` to remove it (rosbag2 and rosbags
#: write these; anything else in the folder means it is not only a bag, so it is kept).
_BAG_FILE_SUFFIXES = (".db3", ".mcap", ".zstd", ".db3-shm", ".db3-wal", ".db3-journal")
#: rosbag2's "infinite" duration in QoS metadata (RMW_DURATION_INFINITE as sec + nsec).
_INFINITE = QosTime(sec=9223372036, nsec=854775807)
#: The ROS distribution whose built-in message definitions the bags are written with.
TYPESTORE = Stores.ROS2_KILTED
#: Where the source tree keeps the upstream vision_msgs definitions (test/interfaces).
_REPO_VISION_MSGS = Path(__file__).resolve().parents[3] / "test" / "interfaces" / "vision_msgs" / "msg"


class BagError(RTPanopticError):
    """A bag cannot be read or written as asked: not a bag, no such topic, a topic of another
    type, an output path that exists; the message names the path or topic and what was expected."""


# --- message definitions ------------------------------------------------------------------


def vision_msgs_definitions() -> Path:
    """The folder of the vision_msgs ``.msg`` files to register in output bags.

    The definitions of the installed vision_msgs come first, because they are the ones the
    detections are serialised with: the ament index (a ROS distro, ``colcon build``), then
    ``share/vision_msgs/msg`` beside the imported Python package (the venv that ``make setup``
    builds into). The source tree's copy (``test/interfaces/vision_msgs``, the upstream 4.1.1
    files) is the last resort; ``test_bag.py`` checks that all give the upstream type hashes.

    Raises:
        BagError: none of them holds ``Detection2DArray.msg``.
    """
    candidates = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.append(Path(get_package_share_directory("vision_msgs")) / "msg")
        except (PackageNotFoundError, OSError, ValueError, KeyError):  # OSError: AMENT_PREFIX_PATH unset
            pass
    except ImportError:  # no ament_index: not a ROS installation
        pass
    try:
        import vision_msgs

        # <prefix>/lib/pythonX.Y/site-packages/vision_msgs -> <prefix>/share/vision_msgs
        candidates.append(Path(vision_msgs.__file__).resolve().parents[4] / "share" / "vision_msgs" / "msg")
    except (ImportError, IndexError, TypeError):  # not installed, or a namespace package
        pass
    candidates.append(Path(sys.prefix) / "share" / "vision_msgs" / "msg")
    candidates.append(_REPO_VISION_MSGS)
    for folder in candidates:
        if (folder / "Detection2DArray.msg").is_file():
            return folder
    looked = ", ".join(str(p) for p in candidates)
    raise BagError(f"no vision_msgs message definitions (Detection2DArray.msg) found; looked in {looked}")


@cache
def output_typestore(definitions: Path | None = None) -> Any:
    """The ROS 2 Kilted typestore of ``rosbags`` plus vision_msgs from ``definitions``.

    Args:
        definitions: a folder of vision_msgs ``.msg`` files; default
            :func:`vision_msgs_definitions`.
    """
    store = get_typestore(TYPESTORE)
    folder = definitions or vision_msgs_definitions()
    types: dict[str, Any] = {}
    for path in sorted(folder.glob("*.msg")):
        types.update(get_types_from_msg(path.read_text(), f"vision_msgs/msg/{path.stem}"))
    store.register(types)
    return store


def ros_type_name(message_class: type) -> str:
    """``sensor_msgs/msg/Image`` for rclpy's ``sensor_msgs.msg.Image`` (module ``sensor_msgs.msg._image``)."""
    return f"{message_class.__module__.split('.')[0]}/msg/{message_class.__name__}"


# --- input ----------------------------------------------------------------------------------


class InputBag:
    """A rosbag2 opened for reading (a bag directory, or a bare ``.db3`` / ``.mcap`` file).

    Raises:
        BagError: the path does not exist, is not a bag, or its storage cannot be read.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"{self.path}: no such file or directory")
        self.storage = _storage_of(self.path)
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except FileNotFoundError:  # a folder without metadata.yaml
            raise BagError(f"{self.path}: not a rosbag2 bag (no metadata.yaml)") from None
        except Exception as error:  # rosbags, sqlite3, yaml, mcap: all mean "not a readable bag"
            raise BagError(f"{self.path}: not a readable rosbag2 bag: {first_line(error)}") from None

    @property
    def start_time(self) -> int:
        """Bag time of the first message (ns)."""
        return self._reader.start_time

    def topics(self) -> dict[str, str | None]:
        """Every topic and its message type (``None`` when its connections disagree)."""
        return {name: info.msgtype for name, info in self._reader.topics.items()}

    def image_topics(self) -> list[str]:
        """The topics whose type is one of :data:`IMAGE_TYPES`, sorted."""
        return sorted(name for name, msgtype in self.topics().items() if msgtype in IMAGE_TYPES)

    def image_topic(self, topic: str) -> tuple[str, list[Connection]]:
        """The message type of ``topic`` and its connections.

        Raises:
            BagError: ``topic`` is not in the bag (the message lists the image topics that
                are) or is not a ``sensor_msgs/Image`` or ``CompressedImage`` topic.
        """
        topics = self._reader.topics
        if topic not in topics:
            available = ", ".join(self.image_topics()) or "none"
            raise BagError(f"{self.path}: no topic {topic}; image topics in the bag: {available}")
        msgtype = topics[topic].msgtype
        if msgtype not in IMAGE_TYPES:
            others = ", ".join(t for t in self.image_topics() if t != topic) or "none"
            raise BagError(
                f"{self.path}: topic {topic} is {msgtype or 'of mixed types'}, not "
                f"{' or '.join(IMAGE_TYPES)}; image topics in the bag: {others}"
            )
        return msgtype, list(topics[topic].connections)

    def messages(
        self, connections: Sequence[Connection], start: int | None = None, stop: int | None = None
    ) -> Iterator[tuple[int, bytes]]:
        """``(bag time ns, raw CDR bytes)`` of ``connections`` in ``[start, stop)``, in time order."""
        for _, timestamp, raw in self._reader.messages(connections, start, stop):
            yield timestamp, raw

    def count(self, connections: Sequence[Connection], start: int | None, stop: int | None) -> int:
        """How many messages of ``connections`` lie in ``[start, stop)``.

        From the bag's index when the range is the whole bag; otherwise by one pass over the
        range (reading is far faster than segmenting, so this costs little).
        """
        if start is None and stop is None:
            return sum(c.msgcount for c in connections)
        return sum(1 for _ in self._reader.messages(connections, start, stop))

    def close(self) -> None:
        if self._reader.is_open:
            self._reader.close()

    def __enter__(self) -> InputBag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _storage_of(path: Path) -> StoragePlugin:
    """The storage format of a bag directory (``metadata.yaml``) or a bare storage file."""
    if path.is_file():
        plugin = _STORAGE_SUFFIXES.get(path.suffix.lower())
        if plugin is None:
            raise BagError(f"{path}: not a rosbag2 bag (a bag is a folder, or a .db3 or .mcap file)")
        return plugin
    metadata = path / "metadata.yaml"
    if not metadata.is_file():
        raise BagError(f"{path}: not a rosbag2 bag (no metadata.yaml)")
    try:
        info = yaml.safe_load(metadata.read_text())["rosbag2_bagfile_information"]
        name = info["storage_identifier"]
    except (yaml.YAMLError, TypeError, KeyError, UnicodeDecodeError) as error:
        raise BagError(f"{metadata}: not rosbag2 metadata ({first_line(error)})") from None
    if name not in STORAGE_NAMES:
        raise BagError(f"{path}: storage {name!r} is not supported (supported: {', '.join(STORAGE_NAMES)})")
    return STORAGE_NAMES[name]


# --- output ---------------------------------------------------------------------------------


def check_output_path(path: str | Path, overwrite: bool, source: str | Path) -> None:
    """Refuse an output path that would destroy something.

    Raises:
        BagError: ``path`` is the input bag, lies inside it or holds it; it exists and
            ``overwrite`` is False; or it exists but is not a bag directory (so
            ``--overwrite`` will not delete it either).
    """
    out, src = Path(path).resolve(), Path(source).resolve()
    if out == src or src in out.parents or out in src.parents:
        raise BagError(f"{path}: the output must lie outside the input bag {source}")
    if not (out.exists() or out.is_symlink()):
        return
    if not overwrite:
        raise BagError(f"{path} exists; pass --overwrite to replace it")
    if not _is_bag_directory(Path(path)):
        raise BagError(f"{path} exists and is not a bag folder: not replacing it, even with --overwrite")


def _is_bag_directory(path: Path) -> bool:
    """A real folder holding only ``metadata.yaml`` and storage files (or nothing)."""
    if path.is_symlink() or not path.is_dir():
        return False
    for entry in path.iterdir():
        name = entry.name
        if not entry.is_file() or not (name == "metadata.yaml" or name.endswith(_BAG_FILE_SUFFIXES)):
            return False
    return True


def output_qos(depth: int, latched: bool = False) -> Qos:
    """The QoS recorded as offered: the node's (reliable, keep last ``depth``; ``latched``:
    transient local), so that ``ros2 bag play`` republishes the outputs as the node would
    publish them."""
    return Qos(
        history=QosHistory.KEEP_LAST,
        depth=depth,
        reliability=QosReliability.RELIABLE,
        durability=QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE,
        deadline=_INFINITE,
        lifespan=_INFINITE,
        liveliness=QosLiveliness.AUTOMATIC,
        liveliness_lease_duration=_INFINITE,
        avoid_ros_namespace_conventions=False,
    )


class OutputBag:
    """A new rosbag2 (format version 9) in ``storage``, its topics typed for every reader.

    The bag is written in a staging folder beside ``path`` (``.<name>.partial/<name>``) and
    moved to ``path`` by :meth:`close` once complete, so that ``path`` only ever holds a whole
    bag: a crash or a full disk leaves no half-written bag under the final name, and
    :meth:`discard` removes the staging folder.

    Args:
        path: the bag folder to create; an old bag there is removed first when
            ``overwrite`` is set (:func:`check_output_path` is applied again).
        storage: sqlite3 or mcap.
        source: the input bag (never overwritten).
        custom_data: string pairs for ``metadata.yaml``'s ``custom_data`` (provenance).
    """

    def __init__(
        self,
        path: str | Path,
        storage: StoragePlugin,
        *,
        source: str | Path,
        overwrite: bool = False,
        custom_data: dict[str, str] | None = None,
    ) -> None:
        self.path = Path(path)
        check_output_path(self.path, overwrite, source)
        if self.path.exists():
            shutil.rmtree(self.path)
        self.staging = self.path.parent / f".{self.path.name}.partial"
        shutil.rmtree(self.staging, ignore_errors=True)  # a crashed earlier run's
        self._store = output_typestore()
        try:
            self.staging.mkdir(parents=True)
            # Inside a folder of the final name: rosbags names the storage file after it.
            self._writer = Writer(self.staging / self.path.name, version=9, storage_plugin=storage)
            for key, value in (custom_data or {}).items():
                self._writer.set_custom_data(key, value)
            self._writer.open()
        except (WriterError, OSError) as error:  # e.g. no space, no permission
            self.discard()
            raise BagError(f"{self.path}: cannot create the bag: {first_line(error)}") from None

    def add_topic(self, topic: str, msgtype: str, qos: Qos) -> Connection:
        """Register ``topic`` with the definition and RIHS01 hash of ``msgtype``."""
        return self._writer.add_connection(topic, msgtype, typestore=self._store, offered_qos_profiles=[qos])

    def set_custom_data(self, key: str, value: str) -> None:
        """A string pair in ``metadata.yaml``'s ``custom_data`` (any time before :meth:`close`)."""
        self._writer.set_custom_data(key, value)

    def write(self, connection: Connection, timestamp: int, raw: bytes) -> None:
        """One message: CDR bytes at bag time ``timestamp`` (ns)."""
        self._writer.write(connection, timestamp, raw)

    def close(self) -> None:
        """Finish the storage file, write ``metadata.yaml`` and move the bag to its final name:
        only now is the bag complete, and only now does ``path`` exist."""
        if self._writer.storage is not None:
            self._writer.close()
        os.replace(self.staging / self.path.name, self.path)
        self.staging.rmdir()

    def discard(self) -> None:
        """Close the unfinished bag's storage without finishing it, and remove it (nothing is
        left under the final name either)."""
        storage = getattr(getattr(self, "_writer", None), "storage", None)
        if storage is not None:
            with contextlib.suppress(Exception):  # it failed already; only its file handle matters
                storage.abort()
            self._writer.storage = None
        shutil.rmtree(self.staging, ignore_errors=True)
