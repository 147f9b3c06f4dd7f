"""Everything that needs a GPU, in one file: each backend on CUDA against the torch CPU float32
reference, CUDA-graph replay, the decoder on CUDA, int8 TensorRT accuracy, fp16 activations,
and a second GPU.

Each test is skipped only where its hardware or library is missing, and says which; the file
is collected without CUDA, TensorRT or onnxconverter-common. ``make gpu-check`` runs it (and
the GPU benchmarks) on the first machine with a GPU.

Tolerances are relative to each output's largest magnitude (``max |got - want| <= tol x
max |want|``, per ``HeadOutputs`` field), because the logits (~0.1-1) and ``box_reg`` (an
``exp``, in pixels) live on different scales, and elementwise ratios blow up where a logit is ~0.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, TRI_REFERENCE, random_batchnorm_stats, tiny_config
from torchvision.ops.misc import FrozenBatchNorm2d

from rt_panoptic_ros import Predictor
from rt_panoptic_ros.errors import InputError
from rt_panoptic_ros.model import HeadOutputs, RTPanoNet, load_model, save_checkpoint
from rt_panoptic_ros.panoptic import PanopticResult, decode
from rt_panoptic_ros.runtime.backends import TorchBackend
from rt_panoptic_ros.runtime.export import OUTPUT_NAMES, flatten_outputs

CUDA = torch.cuda.is_available()
TENSORRT = CUDA and importlib.util.find_spec("tensorrt") is not None
FP16_ONNX = importlib.util.find_spec("onnxconverter_common") is not None
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")
needs_tensorrt = pytest.mark.skipif(not TENSORRT, reason="needs an NVIDIA GPU with TensorRT")
needs_fp16_onnx = pytest.mark.skipif(not FP16_ONNX, reason="needs onnxconverter-common for fp16 ONNX")
needs_two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
pytestmark = pytest.mark.gpu

# float32 on the GPU vs float32 on the CPU: the same function, summed in another order (cuDNN's
# and TensorRT's kernels, folded BatchNorm): float32 eps is 1.2e-7; the folded copy on the CPU
# is within 7.4e-6 of the scale (centerness_1) through ResNet-50, the FPN and the 4-conv towers,
# and other kernels' summation orders stay in that range. 1e-3 leaves a wide margin
# yet fails TF32, which rounds every convolution's inputs to a 10-bit mantissa (eps 9.8e-4,
# as fp16): TF32 is turned off for torch here (`ieee_float32`); TensorRT clears its TF32 flag
# itself. A wrong layer, weight or binding moves the outputs by their whole scale.
FP32_TOL = 1e-3
# fp16 (torch autocast; a TensorRT engine of the fp16 ONNX graph) vs float32: a 10-bit mantissa
# rounded after every convolution. Measured on the CPU on this model and image: torch autocast
# float16 at most 5.0e-3 of the scale (centerness_1), ONNX Runtime on the fp16 graph that
# TensorRT builds from at most 3.2e-3; semantic maps 99.9% equal in both. 2e-2 is a 4x margin
# for cuDNN / TensorRT picking other kernels, and still 50x below a broken layer.
FP16_TOL = 2e-2
TOLERANCE = {"fp32": FP32_TOL, "fp16": FP16_TOL}
# Decoded semantic maps: a pixel whose two best logits are closer than the error flips class.
SEMANTIC_AGREEMENT = {"fp32": 0.99, "fp16": 0.97}
# CUDA graph vs eager, both float32 on the GPU: the same kernels, so only run-to-run
# nondeterminism (atomics, ~1e-7); 1e-4 of the scale. Two different images differ by ~1.
GRAPH_TOL = 1e-4
# int8 TensorRT vs torch float32, on the bundled trained model: PQ points it may lose. The same
# Q/DQ graph on ONNX Runtime (CPU), same calibration and split: PQ 67.61 vs 67.87 (-0.25).
INT8_MAX_PQ_DROP = 1.5
# make_weights.py's random weights drive the FPN's activations to 2.3e5, beyond float16's
# largest number (65504): fp16 then overflows to inf/NaN, as any network with such activations
# would. A trained network's stay far lower. Every activation before the head's first
# GroupNorm is scaled down by this power of two (exactly: see `keep_in_float16_range`).
TRI_ACTIVATION_SCALE = 1 / 64


def relative_errors(got: HeadOutputs, want: HeadOutputs) -> dict[str, float]:
    """Per output name: max |got - want| / max |want| (NaN if ``got`` holds NaN or inf)."""
    errors = {}
    for name, a, b in zip(OUTPUT_NAMES, flatten_outputs(got), flatten_outputs(want), strict=True):
        assert a.shape == b.shape, f"{name}: {list(a.shape)} != {list(b.shape)}"
        a, b = a.float().cpu(), b.float().cpu()
        errors[name] = float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
    return errors


def assert_within(errors: dict[str, float], tol: float) -> None:
    bad = {name: f"{e:.2e}" for name, e in errors.items() if not e <= tol}  # NaN fails too
    assert not bad, f"outputs beyond {tol:.0e} of their scale: {bad}"


def on_device(outputs: HeadOutputs, device: str | torch.device) -> HeadOutputs:
    moved = {
        name: [t.to(device) for t in value] if isinstance(value, list) else value.to(device)
        for name, value in outputs._asdict().items()
    }
    return HeadOutputs(**moved)


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def semantic_agreement(a: PanopticResult, b: PanopticResult) -> float:
    return float((a.semantic.cpu() == b.semantic.cpu()).float().mean())


@pytest.fixture
def ieee_float32():
    """torch's float32 convolutions and matmuls in IEEE float32, not TF32, for this test.

    Set and restored by hand: monkeypatch cannot undo ``torch.backends.cuda.matmul``'s
    attribute (it is served by ``__getattr__``, so monkeypatch deletes it on undo).
    """
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# --- the converted TRI model, at the fixture's input ---------------------------------------------


def keep_in_float16_range(model: RTPanoNet, scale: float) -> RTPanoNet:
    """Scale every activation between the input's normalisation and the head's first GroupNorm
    by ``scale``, in place, leaving the network's outputs as they are.

    Conv, ReLU, max-pool, residual sums and resizing are positively homogeneous, so scaling each
    layer's additive term (FrozenBN bias and mean, conv biases) scales its output; the stem's BN
    weight starts it. Each head tower begins with conv -> GroupNorm, which divides the scale out
    (its eps, 1e-5, is negligible next to these activations' variance). With a power-of-two
    ``scale`` every product is exact: the float32 outputs are bit for bit the same.
    """
    with torch.no_grad():
        for name, bn in model.backbone.body.named_modules():
            if isinstance(bn, FrozenBatchNorm2d):
                bn.bias.mul_(scale)
                (bn.weight if name == "bn1" else bn.running_mean).mul_(scale)
        for conv in model.backbone.fpn.modules():
            if isinstance(conv, torch.nn.Conv2d):
                conv.bias.mul_(scale)
        for tower in (model.head.semantic_tower, model.head.localization_tower):
            tower[0][0].bias.mul_(scale)
    return model


@dataclass
class TriRun:
    """The TRI model (float16-safe, see above) as a file, the fixture's image, and torch's float32
    CPU outputs and decoded result for it: the reference every GPU backend is held to."""

    model_file: Path
    image: np.ndarray  # uint8 [256, 512, 3] RGB
    outputs: HeadOutputs
    result: PanopticResult


@pytest.fixture(scope="module")
def tri_run(tri_model_file, tmp_path_factory) -> TriRun:
    model = load_model(tri_model_file)
    image = np.load(TRI_REFERENCE / "fixture_seed1_256x512.npz")["image_rgb"]
    batch = torch.from_numpy(image).permute(2, 0, 1)[None].contiguous()
    with torch.no_grad():
        converted = model(batch)
        outputs = keep_in_float16_range(model, TRI_ACTIVATION_SCALE)(batch)
    assert_within(relative_errors(outputs, converted), 1e-6)  # the same function (0.0 measured)
    path = save_checkpoint(model, tmp_path_factory.mktemp("tri_gpu") / "tri_seed1.pt")
    return TriRun(path, image, outputs, decode(outputs, model.cfg, (256, 512))[0])


@pytest.mark.parametrize(
    ("backend", "precision"),
    [
        pytest.param("torch", "fp32", marks=needs_cuda, id="torch-fp32"),
        pytest.param("torch", "fp16", marks=needs_cuda, id="torch-fp16"),
        pytest.param("tensorrt", "fp32", marks=needs_tensorrt, id="tensorrt-fp32"),
        pytest.param("tensorrt", "fp16", marks=[needs_tensorrt, needs_fp16_onnx], id="tensorrt-fp16"),
    ],
)
def test_gpu_backends_match_torch_on_the_cpu(tri_run, backend, precision, ieee_float32, tmp_path):
    predictor = Predictor(
        tri_run.model_file, device="cuda", backend=backend, precision=precision,
        input_size=(256, 512), cache_dir=tmp_path,
    )  # fmt: skip
    assert predictor.backend.precision == precision
    batch = predictor.upload([tri_run.image])
    outputs = predictor.infer(batch.images)
    assert {t.device.type for t in flatten_outputs(outputs)} == {"cuda"}  # decoded where they are
    assert_within(relative_errors(outputs, tri_run.outputs), TOLERANCE[precision])
    result = predictor.download(predictor.decode(outputs, batch))[0]
    assert result.semantic.shape == (256, 512)
    assert semantic_agreement(result, tri_run.result) >= SEMANTIC_AGREEMENT[precision]


@needs_cuda
def test_cuda_graph_replays_follow_their_input(tri_run, ieee_float32):
    """A graph that ignored its input (or replayed a stale one) would fail the second image."""
    eager = Predictor(tri_run.model_file, device="cuda", precision="fp32")
    graph = Predictor(tri_run.model_file, device="cuda", precision="fp32", cuda_graph=True)
    second = np.ascontiguousarray(tri_run.image[::-1, ::-1])  # turned 180 degrees: other content
    replays = []
    for image in (tri_run.image, second):  # the capture and a replay, then a replay
        batch = graph.upload([image])
        got = on_device(graph.infer(batch.images), "cpu")  # a copy: the next replay overwrites them
        assert_within(relative_errors(got, eager.infer(eager.upload([image]).images)), GRAPH_TOL)
        replays.append(got)
    assert relative_errors(replays[1], replays[0])["semantic_logits"] > 100 * GRAPH_TOL


# --- the decoder ---------------------------------------------------------------------------------


@needs_cuda
def test_the_decoder_on_cuda_equals_the_cpu_decoder(rigged_file):
    """The rigged network's real outputs (instances, stuff and void), two images of other sizes
    in one padded batch, decoded on each device from the same head outputs."""
    predictor = Predictor(rigged_file)  # torch on the CPU
    batch = predictor.upload([random_image(200, 300, 1), random_image(130, 250, 2)])
    with torch.no_grad():
        outputs = predictor.infer(batch.images)
    on_cpu = decode(outputs, predictor.cfg, batch.content_sizes, batch.original_sizes)
    on_gpu = decode(on_device(outputs, "cuda"), predictor.cfg, batch.content_sizes, batch.original_sizes)
    for a, b in zip(on_cpu, on_gpu, strict=True):
        assert b.semantic.device.type == "cuda"
        b = b.to("cpu")
        assert len(a.segments) > 3
        assert torch.equal(a.semantic, b.semantic) and torch.equal(a.instance, b.instance)
        unscored = [dataclasses.replace(s, score=0.0) for s in a.segments]
        assert unscored == [dataclasses.replace(s, score=0.0) for s in b.segments]
        # Scores are products of sigmoids: CUDA's and the CPU's exp differ in the last bits.
        assert [s.score for s in b.segments] == pytest.approx([s.score for s in a.segments], rel=1e-5)


# --- precision -----------------------------------------------------------------------------------


@needs_cuda
def test_torch_fp16_keeps_fp16_activations_after_the_stem():
    """Unfolded, every ResNet stage ends in a float32 FrozenBN (+ residual) and hands float32
    on; folded, the backbone stays fp16 under autocast."""
    net = random_batchnorm_stats(RTPanoNet(tiny_config("resnet18")).eval())
    x = torch.randint(0, 256, (1, 3, 128, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(x)  # float32 on the CPU: no TF32 in the reference
    backend = TorchBackend(net, torch.device("cuda"), precision="fp16")
    dtypes = {}
    for stage in ("layer1", "layer2", "layer3", "layer4"):
        backend.model.backbone.body.get_submodule(stage).register_forward_hook(
            lambda m, i, out, stage=stage: dtypes.__setitem__(stage, out.dtype)
        )
    out = backend(x.cuda().contiguous(memory_format=torch.channels_last))
    assert dtypes == dict.fromkeys(("layer1", "layer2", "layer3", "layer4"), torch.float16)
    assert_within(relative_errors(out, expected), FP16_TOL)


def panoptic_quality(predictor: Predictor, folder: Path) -> float:
    """PQ (percent) of ``predictor`` on a synthetic split, scored as benchmarks/decoder_pq.py does."""
    from rt_panoptic_ros.image_io import read_panoptic_png, read_rgb
    from rt_panoptic_ros.panoptic.coco_format import to_coco_panoptic
    from rt_panoptic_ros.panoptic.fusion import void_label
    from rt_panoptic_ros.training.data.panoptic_format import Segment, load_panoptic_json
    from rt_panoptic_ros.training.evaluation import PanopticEvaluator

    gt = load_panoptic_json(folder / "panoptic.json", ground_truth=True)
    evaluator = PanopticEvaluator(gt.categories)
    void = void_label(predictor.cfg.dataset.num_classes)
    for ann in gt.annotations:
        result = predictor(read_rgb(folder / "images" / ann.file_name))
        pred_ids, info = to_coco_panoptic(result, predictor.cfg, void)
        pred_segments = [Segment(id=s["id"], category_id=s["category_id"]) for s in info]
        evaluator.process(read_panoptic_png(folder / "panoptic" / ann.file_name), ann.segments,
                          pred_ids, pred_segments)  # fmt: skip
    return 100 * evaluator.evaluate()["All"]["pq"]


@needs_tensorrt
def test_int8_tensorrt_keeps_the_bundled_models_pq(tmp_path):
    """int8 Q/DQ (calibrated on 16 synthetic images of another seed) vs torch float32 on the CPU,
    on 20 held-out synthetic scenes at 256x512 (the model's own input size, 128x256)."""
    from rt_panoptic_ros.training.data.synthetic import write_dataset

    write_dataset(tmp_path / "calibration", 16, seed=2, height=256, width=512, progress=False)
    write_dataset(tmp_path / "held_out", 20, seed=7, height=256, width=512, progress=False)
    model = ROOT / "models" / "small_synthetic.pt"
    int8 = Predictor(
        model, backend="tensorrt", precision="int8", calibration_dir=tmp_path / "calibration" / "images",
        cache_dir=tmp_path / "cache",
    )  # fmt: skip
    assert int8.backend.precision == "int8"
    fp32_pq = panoptic_quality(Predictor(model), tmp_path / "held_out")
    int8_pq = panoptic_quality(int8, tmp_path / "held_out")
    assert fp32_pq > 30, f"the float32 reference scores PQ {fp32_pq:.1f}: no baseline to compare with"
    assert int8_pq >= fp32_pq - INT8_MAX_PQ_DROP, f"PQ int8 {int8_pq:.2f} vs fp32 {fp32_pq:.2f}"


# --- TensorRT engines ----------------------------------------------------------------------------


@needs_tensorrt
def test_a_tensorrt_engine_is_built_once_and_checks_its_input(rigged_file, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rt_panoptic_ros")
    image = random_image(128, 256)
    first = Predictor(
        rigged_file, backend="tensorrt", precision="fp32", input_size=(128, 256), cache_dir=tmp_path
    )
    assert "building it" in caplog.text
    caplog.clear()
    again = Predictor(
        rigged_file, backend="tensorrt", precision="fp32", input_size=(128, 256), cache_dir=tmp_path
    )
    assert "using the TensorRT engine" in caplog.text and "building" not in caplog.text
    batch = first.upload([image])
    assert_within(relative_errors(again.infer(batch.images), first.infer(batch.images)), GRAPH_TOL)
    with pytest.raises(InputError, match=r"takes input 1x3x128x256 .* got 2x3x128x256"):
        first.predict_batch([image, image])


@needs_tensorrt
@needs_two_gpus
def test_a_tensorrt_engine_runs_on_the_second_gpu(rigged_file, tmp_path):
    image = random_image(128, 256, 3)
    predictor = Predictor(
        rigged_file, backend="tensorrt", device="cuda:1", precision="fp32", input_size=(128, 256),
        cache_dir=tmp_path,
    )  # fmt: skip
    assert predictor.device == torch.device("cuda:1")
    batch = predictor.upload([image])
    outputs = predictor.infer(batch.images)
    assert {t.device for t in flatten_outputs(outputs)} == {torch.device("cuda:1")}
    reference = Predictor(rigged_file, input_size=(128, 256))  # torch float32 on the CPU
    with torch.no_grad():
        expected = reference.infer(reference.upload([image]).images)
    assert_within(relative_errors(outputs, expected), FP32_TOL)
    assert semantic_agreement(predictor(image), reference(image)) >= SEMANTIC_AGREEMENT["fp32"]
