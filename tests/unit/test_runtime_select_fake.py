"""Runtime selection and the TensorRT runtime's plumbing, with fake tensorrt and CUDA modules.

This machine has no GPU and no TensorRT. The fakes below stand in for exactly those two: a
``tensorrt`` module whose "engine" computes each image's sum and maximum, and a
``cuda.bindings.runtime`` whose "device memory" is host memory. They let the real
``TensorRtRuntime`` build, cache, bind buffers by address, copy, run and chunk batches, and the
real ``open_runtime`` walk its fallback chain. ONNX Runtime (CPU) is the real one.
"""

from __future__ import annotations

import ctypes
import json
import logging
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgeblur.errors import ConfigError, ModelMissing
from edgeblur.runtime import select
from edgeblur.runtime import tensorrt as trt_runtime
from edgeblur.runtime.base import RuntimeSettings
from edgeblur.runtime.engines import EngineCache
from edgeblur.runtime.onnxruntime import OnnxRuntime
from edgeblur.runtime.tensorrt import TensorRtRuntime, profile_shapes

MAGIC = b"FAKEPLAN"
NO_DEVICE = 100  # cudaErrorNoDevice


# --- fakes ------------------------------------------------------------------------------------


class FakeCudaError(int):
    @property
    def name(self) -> str:
        return "cudaSuccess" if self == 0 else f"cudaError{int(self)}"


class FakeCudart:
    """cuda.bindings.runtime: every call returns (error, *values); memory is ctypes buffers."""

    cudaError_t = SimpleNamespace(cudaSuccess=FakeCudaError(0))
    cudaMemcpyKind = SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)

    def __init__(self, gpus: int = 1):
        self.gpus = gpus
        self.live: dict[int, ctypes.Array] = {}
        self.allocations = 0
        self.streams = 0

    def _ok(self, *values):
        return (FakeCudaError(0), *values)

    def cudaGetDeviceCount(self):
        return self._ok(self.gpus) if self.gpus else (FakeCudaError(NO_DEVICE), 0)

    def cudaGetDeviceProperties(self, device: int):
        return self._ok(SimpleNamespace(name=b"Fake GPU\0\0\0", major=8, minor=7))

    def _alloc(self, nbytes: int):
        buf = ctypes.create_string_buffer(nbytes)
        self.live[ctypes.addressof(buf)] = buf
        self.allocations += 1
        return self._ok(ctypes.addressof(buf))

    cudaMalloc = _alloc
    cudaMallocHost = _alloc

    def _free(self, ptr: int):
        del self.live[ptr]
        return self._ok()

    cudaFree = _free
    cudaFreeHost = _free

    def cudaStreamCreate(self):
        self.streams += 1
        return self._ok(7)

    def cudaStreamDestroy(self, stream):
        self.streams -= 1
        return self._ok()

    def cudaStreamSynchronize(self, stream):
        return self._ok()

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: int, stream):
        ctypes.memmove(dst, src, nbytes)
        return self._ok()


class FakeEngine:
    """One input ``images`` [-1,3,-1,-1] float32, one output ``stats`` [-1,2]: sum and max."""

    def __init__(self, profile: dict[str, list[list[int]]]):
        self.profile = {k: [tuple(s) for s in v] for k, v in profile.items()}
        self.num_io_tensors = 2

    def get_tensor_name(self, i: int) -> str:
        return ["images", "stats"][i]

    def get_tensor_mode(self, name: str) -> str:
        return "input" if name == "images" else "output"

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        return (-1, 3, -1, -1) if name == "images" else (-1, 2)

    def get_tensor_profile_shape(self, name: str, index: int):
        return self.profile[name]

    def get_tensor_dtype(self, name: str) -> str:
        return "float32"

    def create_execution_context(self) -> FakeContext:
        return FakeContext(self)


class FakeContext:
    def __init__(self, engine: FakeEngine):
        self.engine = engine
        self.shape: tuple[int, ...] | None = None
        self.address: dict[str, int] = {}

    def set_input_shape(self, name: str, shape) -> bool:
        lo, _opt, hi = self.engine.profile[name]
        shape = tuple(shape)
        if not all(a <= s <= b for a, s, b in zip(lo, shape, hi, strict=True)):
            return False
        self.shape = shape
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        assert self.shape is not None
        return self.shape if name == "images" else (self.shape[0], 2)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.address[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        assert self.shape is not None
        n = int(np.prod(self.shape))
        raw = (ctypes.c_float * n).from_address(self.address["images"])
        images = np.frombuffer(raw, np.float32).reshape(self.shape)
        stats = np.stack([images.sum(axis=(1, 2, 3)), images.max(axis=(1, 2, 3))], axis=1)
        stats = np.ascontiguousarray(stats, np.float32)
        ctypes.memmove(self.address["stats"], stats.ctypes.data, stats.nbytes)
        return True


def make_fake_tensorrt(version: str = "10.3.0.30") -> types.ModuleType:
    """TensorRT 10's API; from "11." on, without what 11 removed (FP16/INT8 builder flags)."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.builds = 0
    trt.fail_parse = False
    trt.parsed = []

    class ILogger:
        Severity = SimpleNamespace(INTERNAL_ERROR=0, ERROR=1, WARNING=2, INFO=3, VERBOSE=4)

        def __init__(self) -> None:
            pass

    class Network:
        num_inputs = 1

        def get_input(self, i: int):
            return SimpleNamespace(name="images", shape=(-1, 3, -1, -1))

    class Parser:
        def __init__(self, network, logger):
            self.num_errors = 0

        def parse_from_file(self, path: str) -> bool:
            assert Path(path).is_file()
            trt.parsed.append(Path(path))
            if trt.fail_parse:
                self.num_errors = 1
                return False
            return True

        def get_error(self, i: int) -> str:
            return "In node 3 (NonMaxSuppression): unsupported operator"

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, list] = {}

        def set_shape(self, name, lo, opt, hi) -> None:
            self.shapes[name] = [list(lo), list(opt), list(hi)]

    class Config:
        def __init__(self) -> None:
            self.flags: set[str] = set()
            self.profiles: list[Profile] = []
            self.int8_calibrator = None

        def set_memory_pool_limit(self, pool, size) -> None:
            assert size >= 64 << 20

        def set_flag(self, flag) -> None:
            self.flags.add(flag)

        def add_optimization_profile(self, profile) -> None:
            self.profiles.append(profile)

    class Builder:
        def __init__(self, logger) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            return Network()

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network, config) -> bytes:
            trt.builds += 1
            plan = {"profile": config.profiles[0].shapes, "flags": sorted(config.flags)}
            return MAGIC + json.dumps(plan).encode()

    class Runtime:
        def __init__(self, logger) -> None:
            pass

        def deserialize_cuda_engine(self, data: bytes):
            if not data.startswith(MAGIC):
                return None
            return FakeEngine(json.loads(data[len(MAGIC) :])["profile"])

    trt.ILogger = ILogger
    trt.Builder = Builder
    trt.OnnxParser = Parser
    trt.Runtime = Runtime
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="workspace")
    trt.BuilderFlag = SimpleNamespace(FP16="fp16", INT8="int8")
    if int(version.split(".")[0]) >= 11:
        # TensorRT 11: strongly typed networks only; the precision flags are gone.
        trt.BuilderFlag = SimpleNamespace(REFIT="refit")
    trt.TensorIOMode = SimpleNamespace(INPUT="input", OUTPUT="output")
    trt.nptype = lambda dtype: np.float32
    return trt


@pytest.fixture(autouse=True)
def fresh_fallback_log(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees the "logged once" set of a fresh process."""
    monkeypatch.setattr(select, "_logged", set())


def install_fakes(monkeypatch: pytest.MonkeyPatch, gpus: int = 1, version: str = "10.3.0.30"):
    trt, cudart = make_fake_tensorrt(version), FakeCudart(gpus)
    bindings = types.ModuleType("cuda.bindings")
    bindings.runtime = cudart
    cuda = types.ModuleType("cuda")
    cuda.bindings = bindings
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)
    return trt, cudart


def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on this machine, whatever is installed: ``import tensorrt`` fails."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)


@pytest.fixture
def onnx_model(tmp_path: Path) -> Path:
    """A real one-node ONNX network (Relu) with a dynamic NCHW input, for ONNX Runtime."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, ["n", 3, "h", "w"])
    y = helper.make_tensor_value_info("stats", TensorProto.FLOAT, ["n", 3, "h", "w"])
    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["stats"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "tiny.onnx"
    path.write_bytes(model.SerializeToString())
    return path


def trt_settings(tmp_path: Path, **kw) -> RuntimeSettings:
    base = {"backend": "tensorrt", "engine_dir": str(tmp_path / "engines"), "max_batch": 4}
    return RuntimeSettings(**{**base, **kw})


def messages(caplog: pytest.LogCaptureFixture, level: int | None = None) -> list[str]:
    return [r.getMessage() for r in caplog.records if level is None or r.levelno == level]


# --- profile shapes (pure) ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dims", "expected"),
    [
        ((-1, 3, -1, -1), ((1, 3, 32, 32), (8, 3, 384, 640), (8, 3, 640, 640))),
        ((1, 3, -1, -1), ((1, 3, 32, 32), (1, 3, 384, 640), (1, 3, 640, 640))),
        ((-1, 3, 480, 640), ((1, 3, 480, 640), (8, 3, 480, 640), (8, 3, 480, 640))),
        ((1, 3, 640, 640), None),
    ],
)
def test_profile_covers_batch_and_input_size(dims, expected) -> None:
    assert profile_shapes(dims, 8, 640, 1.0) == expected


def test_profile_height_follows_max_aspect() -> None:
    _lo, opt, hi = profile_shapes((-1, 3, -1, -1), 2, 640, 1.78)  # type: ignore[misc]
    assert hi == (2, 3, 1152, 640) and opt == (2, 3, 384, 640)


# --- the TensorRT runtime on fakes --------------------------------------------------------------


def test_fake_tensorrt_builds_caches_and_runs_without_per_frame_allocation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    trt, cudart = install_fakes(monkeypatch)
    model = tmp_path / "face.onnx"
    model.write_bytes(b"model bytes")
    caplog.set_level(logging.INFO)
    rt = select.open_runtime(model, trt_settings(tmp_path), input_width=64)
    assert isinstance(rt, TensorRtRuntime)
    assert any(
        "building TensorRT engine for face.onnx (first run on this GPU; this can take minutes)" in m
        for m in messages(caplog)
    )
    assert trt.builds == 1
    assert (rt.input_names, rt.output_names, rt.batch_dynamic) == (["images"], ["stats"], True)
    assert rt.input_shape("images") == (None, 3, None, None)
    allocated = cudart.allocations
    rng = np.random.default_rng(0)
    for n, h in ((3, 32), (1, 64), (4, 64), (6, 64), (9, 32)):  # 6 and 9 exceed max_batch 4
        batch = rng.random((n, 3, h, 64), dtype=np.float32)
        (stats,) = rt.run({"images": batch})
        assert stats.shape == (n, 2)
        np.testing.assert_allclose(stats[:, 0], batch.sum(axis=(1, 2, 3)), rtol=1e-5)
        np.testing.assert_allclose(stats[:, 1], batch.max(axis=(1, 2, 3)))
    assert cudart.allocations == allocated  # buffers were sized for the largest batch once
    rt.close()
    assert cudart.live == {} and cudart.streams == 0

    caplog.clear()
    rt2 = select.open_runtime(model, trt_settings(tmp_path), input_width=64)
    assert trt.builds == 1 and not any("building" in m for m in messages(caplog))
    rt2.close()
    rt3 = select.open_runtime(model, trt_settings(tmp_path, precision="fp32"), input_width=64)
    assert trt.builds == 2  # another key, another engine
    rt3.close()


def test_fake_tensorrt_frame_taller_than_profile_names_the_setting(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fakes(monkeypatch)
    model = tmp_path / "face.onnx"
    model.write_bytes(b"model bytes")
    rt = select.open_runtime(model, trt_settings(tmp_path), input_width=64)
    with pytest.raises(ConfigError, match=r"runtime\.max_aspect"):
        rt.run({"images": np.zeros((1, 3, 128, 64), np.float32)})  # portrait, profile is 64x64
    rt.close()


def test_fake_engine_tensorrt_refuses_is_discarded_and_rebuilt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    trt, cudart = install_fakes(monkeypatch)
    model = tmp_path / "face.onnx"
    model.write_bytes(b"model bytes")
    settings = trt_settings(tmp_path)
    key = trt_runtime.engine_key(trt, cudart, model, settings, 64)
    cache = EngineCache(settings.engine_dir)
    # Intact as far as the sidecar can tell, but not an engine this TensorRT can load.
    cache.store(cache.path_for("face", key), key, b"not a plan at all", 1.0)
    rt = select.open_runtime(model, settings, input_width=64)
    assert isinstance(rt, TensorRtRuntime) and trt.builds == 1
    assert any("could not deserialize" in m for m in messages(caplog, logging.WARNING))
    rt.close()


def test_fake_int8_without_calibration_cache_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fakes(monkeypatch)
    model = tmp_path / "face.onnx"
    model.write_bytes(b"model bytes")
    with pytest.raises(ConfigError, match="int8_calibration_cache"):
        select.open_runtime(model, trt_settings(tmp_path, precision="int8"), input_width=64)


def test_fake_user_engine_file_needs_tensorrt(tmp_path: Path, monkeypatch) -> None:
    no_tensorrt(monkeypatch)
    engine = tmp_path / "mine.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ModelMissing, match=r"TensorRT engine, but TensorRT is not available"):
        select.open_runtime(engine, trt_settings(tmp_path), input_width=64)


def test_fake_build_engines_for_a_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onnx_model: Path
) -> None:
    from edgeblur.build import build_engines
    from edgeblur.config import JobConfig

    trt, _cudart = install_fakes(monkeypatch)
    cfg = JobConfig.model_validate(
        {
            "runtime": {"engine_dir": str(tmp_path / "e"), "max_batch": 2},
            "detect": {
                "faces": {"model": str(onnx_model), "family": "centerface", "input_width": 320},
                "plates": {"enabled": False},
            },
        }
    )
    lines: list[str] = []
    paths = build_engines(cfg, progress=lines.append)
    assert len(paths) == 1 and paths[0].is_file() and trt.builds == 1
    assert "tiny (320 px, fp16, batch 1..2): built in" in lines[0]
    build_engines(cfg, progress=lines.append)
    assert trt.builds == 1 and "ok (cached)" in lines[1]

    no_tensorrt(monkeypatch)
    with pytest.raises(trt_runtime.TensorRtUnavailable, match="tensorrt Python package"):
        build_engines(cfg, progress=lines.append)


# --- selection and its fallbacks ---------------------------------------------------------------


def test_fake_tensorrt_missing_falls_back_to_cuda_then_cpu_logging_each_step_once(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    onnx_model: Path,
) -> None:
    no_tensorrt(monkeypatch)
    caplog.set_level(logging.INFO)
    rt = select.open_runtime(onnx_model, trt_settings(tmp_path), input_width=64)
    assert isinstance(rt, OnnxRuntime) and rt.providers == ["CPUExecutionProvider"]
    warnings = messages(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert "TensorRT is not available" in warnings[0]
    assert warnings[0].endswith("falling back to ONNX Runtime CUDA")
    assert "no CUDAExecutionProvider" in warnings[1]
    assert warnings[1].endswith("falling back to ONNX Runtime CPU")
    out = rt.run({"images": -np.ones((2, 3, 32, 32), np.float32)})
    assert out[0].shape == (2, 3, 32, 32) and out[0].max() == 0.0

    caplog.clear()
    select.open_runtime(onnx_model, trt_settings(tmp_path), input_width=64)  # second role
    assert messages(caplog, logging.WARNING) == []


def test_fake_no_gpu_falls_back_with_the_reason(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    onnx_model: Path,
) -> None:
    install_fakes(monkeypatch, gpus=0)
    rt = select.open_runtime(onnx_model, trt_settings(tmp_path), input_width=64)
    assert isinstance(rt, OnnxRuntime)
    assert any("no usable CUDA GPU" in m for m in messages(caplog, logging.WARNING))


def test_fake_tensorrt_parse_failure_falls_back_with_the_reason(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    onnx_model: Path,
) -> None:
    trt, _cudart = install_fakes(monkeypatch)
    trt.fail_parse = True
    rt = select.open_runtime(onnx_model, trt_settings(tmp_path), input_width=64)
    assert isinstance(rt, OnnxRuntime)
    first = messages(caplog, logging.WARNING)[0]
    assert "TensorRT cannot run tiny.onnx" in first and "NonMaxSuppression" in first
    assert not list((tmp_path / "engines").glob("*.engine"))


def test_fake_cuda_provider_listed_but_not_starting_falls_back_to_cpu(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    onnx_model: Path,
) -> None:
    import onnxruntime as ort

    no_tensorrt(monkeypatch)
    real = ort.get_available_providers()
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", *real])
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):  # onnxruntime's own warning
        rt = select.open_runtime(onnx_model, trt_settings(tmp_path), input_width=64)
    assert isinstance(rt, OnnxRuntime) and rt.providers == ["CPUExecutionProvider"]
    warnings = messages(caplog, logging.WARNING)
    assert "CUDAExecutionProvider did not start" in warnings[-1]
    assert warnings[-1].endswith("falling back to ONNX Runtime CPU")


def test_fake_fallback_off_makes_a_missing_tensorrt_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onnx_model: Path
) -> None:
    no_tensorrt(monkeypatch)
    with pytest.raises(ConfigError, match=r"runtime\.fallback"):
        select.open_runtime(onnx_model, trt_settings(tmp_path, fallback=False), input_width=64)


def test_fake_auto_on_a_cpu_box_without_openvino_importable_steps_down_at_info(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    onnx_model: Path,
) -> None:
    no_tensorrt(monkeypatch)
    monkeypatch.setitem(sys.modules, "openvino", None)  # as on a box without the extra
    caplog.set_level(logging.INFO)
    rt = select.open_runtime(onnx_model, trt_settings(tmp_path, backend="auto"), input_width=64)
    assert isinstance(rt, OnnxRuntime)
    assert messages(caplog, logging.WARNING) == []
    info = messages(caplog, logging.INFO)
    assert any("falling back to ONNX Runtime CUDA" in m for m in info)
    assert any("falling back to ONNX Runtime CPU" in m for m in info)


def test_fake_auto_picks_tensorrt_when_present(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fakes(monkeypatch)
    model = tmp_path / "face.onnx"
    model.write_bytes(b"model bytes")
    rt = select.open_runtime(model, trt_settings(tmp_path, backend="auto"), input_width=64)
    assert isinstance(rt, TensorRtRuntime)
    rt.close()


def test_fake_backend_onnxruntime_never_tries_tensorrt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onnx_model: Path
) -> None:
    def forbidden(*_a, **_k):
        raise AssertionError("backend onnxruntime must not try TensorRT")

    monkeypatch.setattr(select, "TensorRtRuntime", forbidden)
    rt = select.open_runtime(onnx_model, RuntimeSettings(), input_width=64)
    assert isinstance(rt, OnnxRuntime)


def test_fake_missing_model_is_reported_before_any_fallback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with pytest.raises(ModelMissing, match="does not exist"):
        select.open_runtime(tmp_path / "nope.onnx", trt_settings(tmp_path))
    assert messages(caplog, logging.WARNING) == []


def test_fake_config_reaches_the_runtime_settings(tmp_path: Path) -> None:
    from edgeblur.build import runtime_settings
    from edgeblur.config import RuntimeConfig

    cfg = RuntimeConfig.model_validate(
        {"backend": "tensorrt", "precision": "fp32", "max_batch": 4, "engine_dir": str(tmp_path)}
    )
    s = runtime_settings(cfg, max_batch=16)
    assert (s.backend, s.precision, s.max_batch, s.engine_dir) == (
        "tensorrt",
        "fp32",
        16,
        str(tmp_path),
    )
    with pytest.raises(ValueError, match="int8_calibration_cache"):
        RuntimeConfig.model_validate({"precision": "int8"})


# --- TensorRT 10 and 11, API drift ------------------------------------------------------------


def fake_modelopt(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """A stand-in for nvidia-modelopt's AutoCast (not installable here: it needs CUDA wheels).

    It returns the source model with a marker in its metadata, so the test can tell that the
    file TensorRT parsed is the converted one; the calls' arguments are recorded.
    """
    import importlib.machinery

    import onnx

    calls: list[dict] = []

    def convert_to_mixed_precision(**kwargs):
        calls.append(kwargs)
        model = onnx.load(kwargs["onnx_path"])
        model.metadata_props.add(key="autocast", value=kwargs["low_precision_type"])
        return model

    names = ("modelopt", "modelopt.onnx", "modelopt.onnx.autocast")
    mods = {name: types.ModuleType(name) for name in names}
    for name, mod in mods.items():
        mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
        monkeypatch.setitem(sys.modules, name, mod)
    mods["modelopt"].onnx = mods["modelopt.onnx"]
    mods["modelopt.onnx"].autocast = mods["modelopt.onnx.autocast"]
    mods["modelopt.onnx.autocast"].convert_to_mixed_precision = convert_to_mixed_precision
    return calls


def no_modelopt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "modelopt", None)


def test_fake_tensorrt10_sets_the_precision_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trt, _cudart = install_fakes(monkeypatch, version="10.13.3.9")
    model = tmp_path / "face.onnx"
    model.write_bytes(b"model bytes")
    rt = select.open_runtime(model, trt_settings(tmp_path), input_width=64)
    assert isinstance(rt, TensorRtRuntime) and "-fp16-" in rt.engine_path.name
    plan = json.loads(rt.engine_path.read_bytes()[len(MAGIC) :])
    assert plan["flags"] == ["fp16"] and trt.parsed == [model]
    rt.close()


def test_fake_tensorrt11_fp16_without_modelopt_builds_fp32_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _trt, _cudart = install_fakes(monkeypatch, version="11.4.0.11")
    no_modelopt(monkeypatch)
    model = tmp_path / "face.onnx"
    model.write_bytes(b"model bytes")
    rt = select.open_runtime(model, trt_settings(tmp_path), input_width=64)
    assert isinstance(rt, TensorRtRuntime) and "-fp32-" in rt.engine_path.name
    plan = json.loads(rt.engine_path.read_bytes()[len(MAGIC) :])
    assert plan["flags"] == []  # strongly typed: no precision flag exists to set
    (warning,) = messages(caplog, logging.WARNING)
    assert "nvidia-modelopt is not installed; building fp32" in warning
    rt.close()


def test_fake_tensorrt11_fp16_builds_from_the_autocast_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onnx_model: Path
) -> None:
    import onnx

    trt, _cudart = install_fakes(monkeypatch, version="11.4.0.11")
    calls = fake_modelopt(monkeypatch)
    settings = trt_settings(tmp_path)
    rt = select.open_runtime(onnx_model, settings, input_width=64)
    assert isinstance(rt, TensorRtRuntime) and "-fp16-" in rt.engine_path.name
    (call,) = calls
    assert call["low_precision_type"] == "fp16" and call["keep_io_types"] is True
    (parsed,) = trt.parsed
    assert parsed.name.endswith(".fp16.onnx") and parsed.parent == tmp_path / "engines" / "onnx"
    meta = {p.key: p.value for p in onnx.load(str(parsed)).metadata_props}
    assert meta["autocast"] == "fp16"
    rt.close()
    # Another batch size: a new engine, the same converted model.
    rt = select.open_runtime(onnx_model, trt_settings(tmp_path, max_batch=2), input_width=64)
    assert trt.builds == 2 and len(calls) == 1 and trt.parsed == [parsed, parsed]
    rt.close()


def test_fake_tensorrt11_int8_is_refused_in_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, onnx_model: Path
) -> None:
    install_fakes(monkeypatch, version="11.4.0.11")
    cache = tmp_path / "calib.cache"
    cache.write_bytes(b"TRT-calibration")
    settings = trt_settings(
        tmp_path, precision="int8", int8_calibration_cache=str(cache), fallback=False
    )
    with pytest.raises(ConfigError, match="explicit quantize/dequantize nodes") as info:
        select.open_runtime(onnx_model, settings, input_width=64)
    assert "\n" not in str(info.value)
    # With fallback on, the same refusal steps down to ONNX Runtime.
    rt = select.open_runtime(
        onnx_model,
        trt_settings(tmp_path, precision="int8", int8_calibration_cache=str(cache)),
        input_width=64,
    )
    assert isinstance(rt, OnnxRuntime)


def test_fake_tensorrt12_is_unavailable_and_falls_back(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    onnx_model: Path,
) -> None:
    install_fakes(monkeypatch, version="12.0.0")
    rt = select.open_runtime(onnx_model, trt_settings(tmp_path), input_width=64)
    assert isinstance(rt, OnnxRuntime)
    assert "supports (10 and 11)" in messages(caplog, logging.WARNING)[0]


def test_fake_tensorrt_api_drift_falls_back_instead_of_crashing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    onnx_model: Path,
) -> None:
    """A 10.x that lacks an attribute edgeblur uses (as 11 lacks BuilderFlag.FP16)."""
    trt, _cudart = install_fakes(monkeypatch, version="10.99.0")
    trt.BuilderFlag = SimpleNamespace()
    rt = select.open_runtime(onnx_model, trt_settings(tmp_path), input_width=64)
    assert isinstance(rt, OnnxRuntime)
    first = messages(caplog, logging.WARNING)[0]
    assert "does not have the API edgeblur uses to build an engine" in first and "FP16" in first
    # And at load time: an engine whose context lacks execute_async_v3's siblings.
    trt2, _ = install_fakes(monkeypatch, version="10.3.0.30")
    monkeypatch.delattr(trt2, "TensorIOMode")
    select._logged.clear()
    rt = select.open_runtime(onnx_model, trt_settings(tmp_path), input_width=64)
    assert isinstance(rt, OnnxRuntime)
    assert any("load and run an engine" in m for m in messages(caplog, logging.WARNING))
    with pytest.raises(ConfigError, match=r"runtime\.fallback"):
        select.open_runtime(onnx_model, trt_settings(tmp_path, fallback=False), input_width=64)


def test_fake_host_input_goes_to_the_gpu_without_a_host_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install_fakes(monkeypatch)
    model = tmp_path / "face.onnx"
    model.write_bytes(b"model bytes")
    rt = select.open_runtime(model, trt_settings(tmp_path), input_width=64)
    assert isinstance(rt, TensorRtRuntime)
    view = rt.host_input("images", (2, 3, 32, 64))
    rng = np.random.default_rng(1)
    view[...] = rng.random(view.shape, dtype=np.float32)  # "preprocess" straight into it
    expected = view.sum(axis=(1, 2, 3))

    def no_copy(*_a, **_k):
        raise AssertionError("the pinned view was copied onto itself")

    monkeypatch.setattr(trt_runtime.np, "copyto", no_copy)
    (stats,) = rt.run({"images": view})
    np.testing.assert_allclose(stats[:, 0], expected, rtol=1e-5)
    monkeypatch.undo()
    install_fakes(monkeypatch)  # undo() removed the fakes too; the runtime keeps its modules
    ordinary = rng.random((1, 3, 32, 64), dtype=np.float32)
    (stats,) = rt.run({"images": ordinary})  # an ordinary array is still copied in
    np.testing.assert_allclose(stats[:, 0], ordinary.sum(axis=(1, 2, 3)), rtol=1e-5)
    with pytest.raises(ConfigError, match="exceeds"):
        rt.host_input("images", (9, 3, 32, 64))
    rt.close()
