"""hide-cl's own services: `ContinualClassifier` (classify, model info) and `ContinualAdmin` (reload)."""

from __future__ import annotations

import grpc
import numpy as np

from .core import PIPELINE, InferenceCore
from .errors import InvalidArgument, ServeError
from .protos import load
from .runtime import BundleRuntime
from .tensors import element_count

pb, pb_grpc = load("continual")
DEFAULT_TOP_K = 5


def pixels_of(tensor) -> np.ndarray:
    """The request's FP32 `pixel_values` tensor (little-endian bytes + shape [N, 3, H, W])."""
    shape = list(tensor.shape)
    count = element_count(shape, "pixel_values")
    if len(shape) != 4:
        raise InvalidArgument(f"pixel_values has shape {shape[:8]}; send FP32 [N, 3, H, W].")
    if len(tensor.data) != count * 4:
        raise InvalidArgument(f"pixel_values declares shape {shape} ({count * 4} bytes of FP32) but holds "
                              f"{len(tensor.data)} bytes.")
    return np.frombuffer(tensor.data, dtype="<f4").reshape(shape).astype(np.float32, copy=False)


def predictions(runtime: BundleRuntime, outputs: dict[str, np.ndarray], top_k: int, hinted: bool) -> list:
    """One Prediction per image: the top-k classes found for the whole batch at once (numpy, not per sample)."""
    names = runtime.manifest.class_names
    k = min(top_k or DEFAULT_TOP_K, len(names))
    probabilities = outputs["probabilities"]
    top = np.argsort(-probabilities, axis=1, kind="stable")[:, :k]
    scores = np.take_along_axis(probabilities, top, axis=1).tolist()
    return [pb.Prediction(top=[pb.ClassScore(class_id=c, name=names[c], probability=p) for c, p in zip(ids, ps)],
                          task_id=task, task_confidence=confidence, task_from_hint=hinted)
            for ids, ps, task, confidence in zip(top.tolist(), scores, outputs["task_id"].tolist(),
                                                 outputs["task_confidence"].tolist())]


def model_info(runtime: BundleRuntime, versions: list[int]) -> pb.ModelInfoResponse:
    m = runtime.manifest
    tasks = []
    for t in range(m.num_tasks):
        ids = [c for c, ct in enumerate(m.class_to_task) if ct == t]
        tasks.append(pb.TaskInfo(task_id=t, class_ids=ids, class_names=[m.class_names[c] for c in ids],
                                 learned=t < m.tasks_learned))
    return pb.ModelInfoResponse(
        bundle_version=m.version, available_versions=versions, method=m.method, routing=m.routing,
        tasks_learned=m.tasks_learned, num_tasks=m.num_tasks, class_names=m.class_names,
        class_to_task=m.class_to_task, seen_classes=m.seen_classes, tasks=tasks, input_shape=runtime.input_shape,
        providers=runtime.providers, backbone=m.backbone.name, bundle_accuracy=m.measurement.accuracy)


class ClassifierServicer(pb_grpc.ContinualClassifierServicer):
    def __init__(self, core: InferenceCore) -> None:
        self._core = core

    async def Classify(self, request, context):
        try:
            async with self._core.request(PIPELINE) as runtime:
                has_pixels = request.HasField("pixel_values")
                if has_pixels and request.images:
                    raise InvalidArgument("send images or pixel_values, not both.")
                if not has_pixels and not request.images:
                    raise InvalidArgument("send encoded images in `images` or a tensor in `pixel_values`.")
                pixels = pixels_of(request.pixel_values) if has_pixels else None
                images = None if has_pixels else list(request.images)
                n = len(pixels) if pixels is not None else len(images)
                hints = np.full(n, request.task_hint, np.int64) if request.HasField("task_hint") else None
                result = await self._core.pipeline(runtime, pixels, images, hints, context.time_remaining(),
                                                   request.ByteSize())
                return pb.ClassifyResponse(
                    predictions=predictions(runtime, result.outputs, request.top_k, hints is not None),
                    bundle_version=runtime.version)
        except ServeError as error:
            await context.abort(error.code, str(error))

    async def ModelInfo(self, request, context):
        try:
            runtime = self._core.registry.acquire()
        except ServeError as error:
            await context.abort(error.code, str(error))
        try:
            return model_info(runtime, self._core.registry.versions())
        finally:
            runtime.release()


class AdminServicer(pb_grpc.ContinualAdminServicer):
    """Every call here is refused unless it carries an admin token (see serve/auth.py)."""

    def __init__(self, core: InferenceCore) -> None:
        self._core = core

    async def Reload(self, request, context):
        try:
            old, new = await self._core.registry.load(request.version or None)
        except ServeError as error:
            await context.abort(error.code, str(error))
        except Exception as error:  # the version exists but does not load: say why, keep serving the old one
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"bundle version {request.version or 'newest'} "
                                f"failed to load (still serving the previous one): {error}")
        message = "already serving it" if old == new else f"switched from {old} to {new}"
        return pb.ReloadResponse(previous_version=old or 0, version=new, message=message)


