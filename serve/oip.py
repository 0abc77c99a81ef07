"""Open Inference Protocol v2 servicer (`inference.GRPCInferenceService`): protobuf ⇄ numpy, nothing else.

Outputs always travel as `raw_output_contents` (tritonclient's `as_numpy` decodes only those).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from export.manifest import PIXEL_VALUES, PROBABILITIES, TASK_CONFIDENCE, TASK_ID

from .core import IMAGES, PIPELINE, InferenceCore, models_of, shown
from .errors import InvalidArgument, ServeError
from .protos import load
from .runtime import CLASS_ID, BundleRuntime
from .tensors import datatype_of, encode_bytes, to_numpy, to_raw

pb, pb_grpc = load("inference")
SERVER_VERSION = "0.1.0"
CLASS_NAME = "class_name"  # BYTES [N]: the predicted class's name (UTF-8), from the manifest
PIPELINE_OUTPUTS = (CLASS_ID, CLASS_NAME, PROBABILITIES, TASK_ID, TASK_CONFIDENCE)


def tensor_meta(name: str, datatype: str, shape: list[int]):
    return pb.ModelMetadataResponse.TensorMetadata(name=name, datatype=datatype, shape=shape)


def model_metadata(runtime: BundleRuntime, model: str) -> pb.ModelMetadataResponse:
    """Names, datatypes and shapes (−1 = variable) as the manifest declares them."""
    versions = [str(runtime.version)]
    if model != PIPELINE:
        graph = runtime.graph(model)
        return pb.ModelMetadataResponse(
            name=model, versions=versions, platform="onnxruntime_onnx",
            inputs=[tensor_meta(t.name, t.datatype, t.shape) for t in graph.inputs],
            outputs=[tensor_meta(t.name, t.datatype, t.shape) for t in graph.outputs])
    classes = runtime.num_classes
    return pb.ModelMetadataResponse(
        name=PIPELINE, versions=versions, platform="hidecl_two_step",
        inputs=[tensor_meta(PIXEL_VALUES, "FP32", runtime.input_shape), tensor_meta(IMAGES, "BYTES", [-1]),
                tensor_meta(TASK_ID, "INT64", [-1])],
        outputs=[tensor_meta(CLASS_ID, "INT64", [-1]), tensor_meta(CLASS_NAME, "BYTES", [-1]),
                 tensor_meta(PROBABILITIES, "FP32", [-1, classes]),
                 tensor_meta(TASK_ID, "INT64", [-1]), tensor_meta(TASK_CONFIDENCE, "FP32", [-1])])


def decode_inputs(request: pb.ModelInferRequest) -> dict[str, np.ndarray | list[bytes]]:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs: send one per input, "
                              "in the order of `inputs`.")
    names = [t.name for t in request.inputs]
    if len(set(names)) != len(names):
        raise InvalidArgument(f"input names repeat: {[shown(n) for n in names][:8]}.")
    return {t.name: to_numpy(t, raw[i] if raw else None) for i, t in enumerate(request.inputs)}


def encode_outputs(request: pb.ModelInferRequest, runtime: BundleRuntime, outputs: dict[str, np.ndarray],
                   available: tuple[str, ...]) -> pb.ModelInferResponse:
    wanted = [o.name for o in request.outputs] or list(available)
    unknown = [shown(n) for n in wanted if n not in available]
    if unknown:
        raise InvalidArgument(f"requested outputs {unknown[:8]} do not exist; model '{request.model_name}' has "
                              f"{list(available)}.")
    response = pb.ModelInferResponse(model_name=request.model_name, model_version=str(runtime.version), id=request.id)
    for name in wanted:
        value = outputs[name]
        if isinstance(value, list):  # BYTES
            response.outputs.add(name=name, datatype="BYTES", shape=[len(value)])
            response.raw_output_contents.append(encode_bytes(value))
        else:
            response.outputs.add(name=name, datatype=datatype_of(value), shape=list(value.shape))
            response.raw_output_contents.append(to_raw(value))
    return response


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, core: InferenceCore, ready: Callable[[], bool], server_name: str) -> None:
        self._core, self._ready, self._name = core, ready, server_name

    async def ServerLive(self, request, context):
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return pb.ServerReadyResponse(ready=self._ready())

    async def ModelReady(self, request, context):
        runtime = self._core.registry.current
        ready = (self._ready() and runtime is not None and request.name in models_of(runtime)
                 and request.version in ("", str(runtime.version)))
        return pb.ModelReadyResponse(ready=ready)

    async def ServerMetadata(self, request, context):
        return pb.ServerMetadataResponse(name=self._name, version=SERVER_VERSION, extensions=[])

    async def ModelMetadata(self, request, context):
        try:
            runtime = self._core.registry.acquire()
        except ServeError as error:
            await context.abort(error.code, str(error))
        try:
            self._core.check_model(runtime, request.name, request.version)
            return model_metadata(runtime, request.name)
        except ServeError as error:
            await context.abort(error.code, str(error))
        finally:
            runtime.release()

    async def ModelInfer(self, request, context):
        try:
            async with self._core.request(request.model_name, request.model_version) as runtime:
                inputs = decode_inputs(request)
                if request.model_name == PIPELINE:
                    return await self._pipeline(request, runtime, inputs, context)
                result = await self._core.graph(runtime, request.model_name, inputs, context.time_remaining(),
                                                request.ByteSize())
                names = tuple(t.name for t in runtime.graph(request.model_name).outputs)
                return encode_outputs(request, runtime, result.outputs, names)
        except ServeError as error:
            await context.abort(error.code, str(error))

    async def _pipeline(self, request, runtime, inputs, context):
        unknown = set(inputs) - {PIXEL_VALUES, IMAGES, TASK_ID}
        if unknown:
            raise InvalidArgument(f"model '{PIPELINE}' takes '{PIXEL_VALUES}' or '{IMAGES}' and optionally "
                                  f"'{TASK_ID}'; unknown inputs {sorted(shown(n) for n in unknown)[:8]}.")
        pixels, images, hints = inputs.get(PIXEL_VALUES), inputs.get(IMAGES), inputs.get(TASK_ID)
        if isinstance(pixels, list) or isinstance(hints, list):
            raise InvalidArgument(f"'{PIXEL_VALUES}' (FP32) and '{TASK_ID}' (INT64) are numeric tensors, not BYTES.")
        if images is not None and not isinstance(images, list):
            raise InvalidArgument(f"'{IMAGES}' must be a BYTES tensor [N] of encoded images.")
        if pixels is not None and pixels.dtype != np.float32:
            raise InvalidArgument(f"'{PIXEL_VALUES}' must be FP32, got {datatype_of(pixels)}.")
        if hints is not None and hints.dtype != np.int64:
            raise InvalidArgument(f"'{TASK_ID}' hints must be INT64 [N], got {datatype_of(hints)}.")
        result = await self._core.pipeline(runtime, pixels, images, hints, context.time_remaining(),
                                           request.ByteSize())
        names = runtime.manifest.class_names
        outputs = {**result.outputs, CLASS_NAME: [names[c].encode() for c in result.outputs[CLASS_ID]]}
        return encode_outputs(request, runtime, outputs, PIPELINE_OUTPUTS)

