# rt_panoptic_ros developer commands. `make setup` builds .venv with everything (a no-op when
# it is up to date); `make test` runs the whole test suite in it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.setup-complete
# torch/torchvision are installed on their own first: these exact versions lie on this
# machine's disk (a CUDA build that also runs on the CPU); other versions download gigabytes.
TORCH  := torch==2.14.1 torchvision==0.29.1
# vision_msgs has no wheel: its 2D detection messages (test/interfaces/vision_msgs, the upstream
# names and fields) are built by the rosidl wheels and installed into the venv (lib/*.so,
# lib/python3.X/site-packages/vision_msgs, share/vision_msgs), importable with no environment
# variables. Rebuilt when a definition changes or the venv is set up again.
MSGS_DIR   := test/interfaces/vision_msgs
MSGS_STAMP := $(VENV)/.vision-msgs-built

.PHONY: setup test lint bench gpu-check demo clean

setup: $(STAMP) $(MSGS_STAMP)

$(STAMP): requirements.txt setup.py setup.cfg package.xml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

# The wheels' CMake files name the include dirs of the machine that built them: point them at
# this Python's first (idempotent). Both prefix paths are the venv alone, so a ROS distro
# sourced in the shell cannot mix into the build; a fresh CMake cache each time, so no path
# found for an earlier venv survives (a rebuild takes seconds).
$(MSGS_STAMP): $(STAMP) $(MSGS_DIR)/package.xml $(MSGS_DIR)/CMakeLists.txt $(wildcard $(MSGS_DIR)/msg/*.msg) \
		tools/fix_rosidl_cmake_paths.py
	$(BIN)/python tools/fix_rosidl_cmake_paths.py $(VENV)
	AMENT_PREFIX_PATH=$(abspath $(VENV)) CMAKE_PREFIX_PATH=$(abspath $(VENV)) \
		$(BIN)/colcon --log-base build/interfaces/log build --merge-install \
		--base-paths $(MSGS_DIR) --build-base build/interfaces --install-base $(VENV) --cmake-clean-cache \
		--cmake-args -DPython3_EXECUTABLE=$(abspath $(BIN))/python -DBUILD_TESTING=OFF
	$(BIN)/python -c "from vision_msgs.msg import Detection2DArray"
	touch $(MSGS_STAMP)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The main job: the node on the bundled model, fed a synthetic camera stream over DDS from
# another process; overlays and demo_output/report.json come back. The camera and recorder
# process gets the shipped Fast DDS profile (the node applies it to itself), unless one is set
# already: large frames then arrive in milliseconds, best effort or not (benchmarks/dds.json).
DEMO_OUT := demo_output
DDS_PROFILE := $(abspath config/fastdds_large_images.xml)
demo: setup
	test -f $(DEMO_OUT)/frames/panoptic.json || \
		$(BIN)/rt-panoptic-synth $(DEMO_OUT)/frames --num 8 --seed 0 --height 256 --width 512
	FASTDDS_DEFAULT_PROFILES_FILE="$${FASTDDS_DEFAULT_PROFILES_FILE:-$${FASTRTPS_DEFAULT_PROFILES_FILE:-$(DDS_PROFILE)}}" \
		$(BIN)/rt-panoptic-demo --frames $(DEMO_OUT)/frames/images --output $(DEMO_OUT) --rate 5 --count 30

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: setup
	$(BIN)/python benchmarks/forward_cpu.py

# On the first machine with a GPU: test/test_gpu.py, then every GPU backend's latency per stage,
# into benchmarks/gpu_*.json (about 7 minutes; what the machine lacks is recorded as skipped).
# The script runs the tests itself (it records their counts in gpu_check_summary.json), so they
# run once. It needs no venv and no ROS: on a GPU box without the venv,
# `make gpu-check PYTHON_GPU=python3`.
PYTHON_GPU ?= $(BIN)/python
gpu-check:
	$(PYTHON_GPU) benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) build install log .pytest_cache $(DEMO_OUT)
