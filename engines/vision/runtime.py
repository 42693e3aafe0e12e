"""One vision-engine protocol, three runtimes: ONNX Runtime (CPU default), TensorRT, Triton.

Every model of the service is an ONNX file (shipped in a package, or exported once under the
artifacts dir). A runtime takes named float32 arrays and returns the outputs in the model's output
order, so callers never know which runtime ran:

    >>> eng = make_engine(path)                 # runtime from JAIKOD_VISION_RUNTIME
    >>> (logits,) = eng.run({eng.input_names[0]: batch})

* ``onnxruntime``: ``CPUExecutionProvider`` (CUDA provider first when onnxruntime-gpu is installed).
* ``tensorrt``: builds an FP16 engine from the *same* ONNX file with the TensorRT builder (dynamic
  batch profile), caches the plan beside the ONNX file, runs on CUDA buffers owned by torch.
  TensorRT is not on PyPI here: install from NVIDIA's index (``pip install tensorrt
  --extra-index-url https://pypi.nvidia.com``) on a GPU machine.
* ``triton``: a ``tritonclient`` http/grpc client for a model served remotely under the ONNX
  file's stem (e.g. ``open-nsfw``); the server holds the same ONNX file in its model repository.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from engines.vision.config import get_vision_settings
from engines.vision.errors import VisionRuntimeError

RUNTIMES = ("onnxruntime", "tensorrt", "triton")


@runtime_checkable
class VisionEngine(Protocol):
    runtime: str
    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]: ...


def runtime_available(runtime: str) -> tuple[bool, str]:
    """Whether ``runtime`` can run here, and why not."""
    if runtime == "onnxruntime":
        return importlib.util.find_spec("onnxruntime") is not None, "onnxruntime not installed"
    if runtime == "tensorrt":
        if importlib.util.find_spec("tensorrt") is None:
            return False, "tensorrt is not installed (NVIDIA index only; needs a CUDA GPU)"
        try:
            import torch

            if not torch.cuda.is_available():
                return False, "tensorrt is installed but no CUDA GPU is visible"
        except ImportError:
            return False, "tensorrt runtime needs torch for CUDA buffers"
        return True, ""
    if runtime == "triton":
        if importlib.util.find_spec("tritonclient") is None:
            return False, "tritonclient is not installed (extra 'gpu')"
        return True, ""
    return False, f"unknown runtime {runtime!r}"


class OnnxRuntimeEngine:
    runtime = "onnxruntime"

    def __init__(self, model_path: str | Path, *, threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        threads = get_vision_settings().intra_op_threads if threads is None else threads
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self.model_path = Path(model_path)
        self.session = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.input_shapes = [i.shape for i in self.session.get_inputs()]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, inputs)


class TensorRTEngine:
    """FP16 TensorRT engine built from the ONNX file (dynamic batch 1..max_batch)."""

    runtime = "tensorrt"

    def __init__(self, model_path: str | Path, *, fp16: bool | None = None, max_batch: int | None = None):
        ok, why = runtime_available("tensorrt")
        if not ok:
            raise VisionRuntimeError(why)
        import tensorrt as trt
        import torch

        settings = get_vision_settings()
        fp16 = settings.tensorrt_fp16 if fp16 is None else fp16
        max_batch = max_batch or settings.max_batch
        self.torch, self.trt = torch, trt
        self.model_path = Path(model_path)
        logger = trt.Logger(trt.Logger.WARNING)
        plan = self.model_path.with_suffix(f".b{max_batch}{'.fp16' if fp16 else ''}.plan")
        runtime = trt.Runtime(logger)
        if plan.exists():
            engine = runtime.deserialize_cuda_engine(plan.read_bytes())
        else:
            builder = trt.Builder(logger)
            network = builder.create_network(0)
            parser = trt.OnnxParser(network, logger)
            if not parser.parse(self.model_path.read_bytes()):
                errs = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
                raise VisionRuntimeError(f"TensorRT could not parse {self.model_path.name}: {errs}")
            config = builder.create_builder_config()
            if fp16:
                config.set_flag(trt.BuilderFlag.FP16)
            profile = builder.create_optimization_profile()
            for i in range(network.num_inputs):
                t = network.get_input(i)
                dims = list(t.shape)
                lo, hi = [1, *dims[1:]], [max_batch, *dims[1:]]
                profile.set_shape(t.name, lo, lo, hi)
            config.add_optimization_profile(profile)
            blob = builder.build_serialized_network(network, config)
            if blob is None:
                raise VisionRuntimeError(f"TensorRT could not build an engine for {self.model_path.name}")
            plan.write_bytes(bytes(blob))
            engine = runtime.deserialize_cuda_engine(bytes(blob))
        self.engine = engine
        self.context = engine.create_execution_context()
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        torch = self.torch
        stream = torch.cuda.current_stream()
        keep = []
        for name in self.input_names:
            t = torch.from_numpy(np.ascontiguousarray(inputs[name], dtype=np.float32)).cuda()
            keep.append(t)
            self.context.set_input_shape(name, tuple(t.shape))
            self.context.set_tensor_address(name, t.data_ptr())
        outs = []
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            o = torch.empty(shape, dtype=torch.float32, device="cuda")
            outs.append(o)
            self.context.set_tensor_address(name, o.data_ptr())
        self.context.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        return [o.cpu().numpy() for o in outs]


class TritonEngine:
    """Client for the same model served by Triton (model name = ONNX file stem)."""

    runtime = "triton"

    def __init__(self, model_path: str | Path, *, url: str | None = None, protocol: str | None = None):
        ok, why = runtime_available("triton")
        if not ok:
            raise VisionRuntimeError(why)
        settings = get_vision_settings()
        protocol = protocol or settings.triton_protocol
        if protocol == "grpc":
            import tritonclient.grpc as tc
        else:
            import tritonclient.http as tc
        self.tc = tc
        self.model_name = Path(model_path).stem
        self.client = tc.InferenceServerClient(url=url or settings.triton_url)
        meta = self.client.get_model_metadata(self.model_name)
        if not isinstance(meta, dict):  # grpc returns a protobuf message
            from google.protobuf.json_format import MessageToDict

            meta = MessageToDict(meta, preserving_proto_field_name=True)
        self.input_names = [i["name"] for i in meta["inputs"]]
        self.output_names = [o["name"] for o in meta["outputs"]]

    def run(self, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        reqs = []
        for name in self.input_names:
            arr = np.ascontiguousarray(inputs[name], dtype=np.float32)
            r = self.tc.InferInput(name, list(arr.shape), "FP32")
            r.set_data_from_numpy(arr)
            reqs.append(r)
        outs = [self.tc.InferRequestedOutput(n) for n in self.output_names]
        res = self.client.infer(self.model_name, reqs, outputs=outs)
        return [res.as_numpy(n) for n in self.output_names]


def make_engine(model_path: str | Path, runtime: str | None = None) -> VisionEngine:
    """The engine for ``model_path`` on ``runtime`` (default: ``JAIKOD_VISION_RUNTIME``)."""
    runtime = runtime or get_vision_settings().runtime
    if not Path(model_path).is_file() and runtime != "triton":
        raise VisionRuntimeError(f"model file not found: {model_path}")
    if runtime == "onnxruntime":
        return OnnxRuntimeEngine(model_path)
    if runtime == "tensorrt":
        return TensorRTEngine(model_path)
    if runtime == "triton":
        return TritonEngine(model_path)
    raise VisionRuntimeError(f"unknown vision runtime {runtime!r}; choose one of {RUNTIMES}")
