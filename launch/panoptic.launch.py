"""Launch the panoptic node on a camera.

    ros2 launch rt_panoptic_ros panoptic.launch.py image:=/camera/image_raw namespace:=front \
        params_file:=$(ros2 pkg prefix rt_panoptic_ros)/share/rt_panoptic_ros/config/demo_cpu.yaml

Arguments: image (input topic, remapped onto the node's ``image``), namespace (of the node and
its outputs), params_file (a preset from config/), model, backend, device (override the
preset when not empty), use_sim_time (true for ``ros2 bag play --clock``), dds_profile,
lifecycle.

lifecycle (default false): start ``panoptic_lifecycle_node`` instead, a managed node with the
same name, parameters and topics that waits unconfigured for ``configure`` and ``activate``
(``ros2 lifecycle set``, or a lifecycle manager such as Nav2's); README, "Lifecycle".

dds_profile (default true): the node's process uses the shipped Fast DDS profile for large
images (config/fastdds_large_images.xml), which the node applies to itself before creating its
DDS participant unless FASTDDS_DEFAULT_PROFILES_FILE (or the legacy FASTRTPS_...) is already
set; false keeps Fast DDS's defaults (sets RT_PANOPTIC_DDS_PROFILE=off for the node). Give the
camera driver's process the same file (README, "Large images over DDS").
"""

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode, Node
from launch_ros.substitutions import FindPackageShare

from launch import LaunchDescription

ARGUMENTS = {
    "image": ("image", "input image topic (remapped onto the node's 'image')"),
    "namespace": ("", "namespace of the node and its panoptic/* outputs"),
    "params_file": ("", "parameter preset YAML; empty = config/demo_cpu.yaml"),
    "model": ("", "model file; empty = the preset's (or the bundled model)"),
    "backend": ("", "auto | torch | onnxruntime | tensorrt; empty = the preset's"),
    "device": ("", "cpu, cuda:0, ...; empty = the preset's"),
    "use_sim_time": ("false", "use /clock (bag replay)"),
    "dds_profile": ("true", "true: the node's process uses config/fastdds_large_images.xml (Fast DDS)"),
    "lifecycle": ("false", "true: panoptic_lifecycle_node, a managed node that starts unconfigured"),
}


def _node(context, *args, **kwargs):
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    params_file = value["params_file"] or str(
        FindPackageShare("rt_panoptic_ros").perform(context) + "/config/demo_cpu.yaml"
    )
    overrides = {k: value[k] for k in ("model", "backend", "device") if value[k]}
    overrides["use_sim_time"] = value["use_sim_time"].lower() == "true"
    # The node applies the profile itself (rt_panoptic_ros/ros/dds_profile.py); this only turns it off.
    environment = {} if value["dds_profile"].lower() == "true" else {"RT_PANOPTIC_DDS_PROFILE": "off"}
    managed = value["lifecycle"].lower() == "true"
    # launch_ros's LifecycleNode takes the same arguments as Node and its namespace is required.
    kind, executable = (LifecycleNode, "panoptic_lifecycle_node") if managed else (Node, "panoptic_node")
    return [
        kind(
            package="rt_panoptic_ros",
            executable=executable,
            name="panoptic_node",
            namespace=value["namespace"],
            parameters=[params_file, overrides],
            remappings=[("image", value["image"]), ("image/compressed", value["image"] + "/compressed")],
            output="screen",
            emulate_tty=True,
            additional_env=environment,
        )
    ]


def generate_launch_description() -> LaunchDescription:
    declared = [
        DeclareLaunchArgument(name, default_value=d, description=text)
        for name, (d, text) in ARGUMENTS.items()
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_node)])
