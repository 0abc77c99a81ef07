"""The bundle manifest: the only contract between export/ and serve/.

A bundle version is a folder `<bundle root>/<version>/` holding the ONNX graphs and `manifest.json`.
This module defines and validates the manifest with pydantic and nothing heavier, so the server reads
it without torch (`python -c "import export.manifest"` imports no torch). Bump `FORMAT_VERSION` on any
change a reader of the previous format would misread.
"""

from __future__ import annotations

import json
import re
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from contract.files import file_sha256

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DECISIONS = "decisions.jsonl"  # in a bundle root: export.promote's publication decisions, one JSON per line

# Graph input/output names (also the Open Inference Protocol tensor names the server exposes).
PIXEL_VALUES = "pixel_values"  # FP32 [N, 3, H, W], preprocessed per `preprocessing`
TASK_ID = "task_id"  # INT64 [N]
TASK_CONFIDENCE = "task_confidence"  # FP32 [N]
ROUTER_LOGITS = "router_logits"  # FP32 [N, C], unseen classes at -inf (HiDe routers only)
PROMPT_IDS = "prompt_ids"  # INT64 [N, k]: L2P's selected prompts (no task identity)
LOGITS = "logits"  # FP32 [N, C], raw class logits of the task-conditioned graph
PROBABILITIES = "probabilities"  # FP32 [N, C], softmax over the classes seen so far (unseen: 0)

MAX_VERSION = 2**63 - 1  # versions travel as int64 (protobuf, Prometheus): a folder name above it is no version
_VERSION_NAME = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)  # ASCII decimal, no sign or leading zero

Datatype = Literal["FP32", "FP16", "INT64", "INT32", "BOOL", "UINT8"]
Routing = Literal["task", "prompt_set", "none"]


class ManifestError(ValueError):
    """A bundle that cannot be served; the message names the file and the problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TensorSpec(_Strict):
    name: str
    datatype: Datatype
    shape: list[int]  # -1 marks a variable axis (the batch axis always is)


class BundleFile(_Strict):
    """A file of the version folder and its SHA-256 (checked on load)."""

    file: str = Field(min_length=1, max_length=255)  # relative to the version folder, never leaving it
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @model_validator(mode="after")
    def _relative_file(self) -> BundleFile:
        path = PurePosixPath(self.file)
        if path.is_absolute() or ".." in path.parts or "\\" in self.file:
            raise ValueError(f"bundle file '{self.file}' must be a path inside the version folder (no '..', no "
                             "absolute path)")
        return self


class GraphSpec(BundleFile):
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    opset: int
    exporter: str  # e.g. "torch.onnx (dynamo=False) 2.14.1"

    def output(self, name: str) -> TensorSpec:
        return next(t for t in self.outputs if t.name == name)


class SharedWeights(BundleFile):
    """The tensors every graph holds (the backbone), in one safetensors file the graphs reference as ONNX external
    data (export/shared_weights.py); the runner loads it once for all graphs (export/runtime.py)."""

    bytes: int = Field(gt=0)
    tensors: int = Field(gt=0)


class Preprocessing(_Strict):
    """What the server does to an encoded image before `pixel_values` (the backbone spec): decode to RGB
    (grayscale images repeat their channel), resize the shorter side to `resize_size`, center-crop
    `img_size`, scale to [0, 1], subtract `mean` and divide by `std` per channel, NCHW float32."""

    img_size: int = Field(gt=0)
    resize_size: int = Field(gt=0)  # shorter side before the center crop: round(img_size / crop_pct)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: Literal["bilinear", "bicubic", "nearest"]
    crop_pct: float = Field(gt=0, le=1)


class Backbone(_Strict):
    name: str
    timm_arch: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # timm's seeded random initialisation (training's backbone.checkpoint=random), NOT pretrained weights: a
    # bundle for speed and memory figures only, whose answers mean nothing
    random_init: bool = False


class Source(_Strict):
    run_dir: str
    preset: str
    task: int  # 0-based index of the checkpoint's last learned task
    checkpoint_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # over the checkpoint folder's files


class Parity(_Strict):
    """onnxruntime vs PyTorch on a test split (fp32)."""

    dataset: str
    samples: int = Field(gt=0)
    tolerance: float
    router_task_agreement: float | None  # fraction of samples with the same routed task (None: no router)
    class_agreement: float  # fraction with the same final class
    max_abs_logit_diff: float
    router_max_abs_logit_diff: float | None
    passed: bool


class Measurement(_Strict):
    accuracy: float  # % on the test split of the tasks learned, class-incremental
    accuracy_per_task: list[float] | None = None  # % on each learned task's test images (what guard rails compare)
    images_per_second: float
    batch_size: int
    machine: str


class Variant(_Strict):
    """An alternative build of the graphs (ORT-optimised, fp16, int8), written only if it passed."""

    name: str
    graphs: dict[str, GraphSpec]
    class_agreement: float | None  # vs the fp32 graphs; None when it could not run here
    measurement: Measurement | None
    notes: str


class TaskInfo(_Strict):
    """One task of the run: its classes, by id and by name (names as `class_names` has them)."""

    task_id: int = Field(ge=0)
    name: str  # the task folder's name (ImageFolder), else "task<k>"
    class_ids: list[int]
    class_names: list[str]


class Manifest(_Strict):
    format_version: Literal[1] = FORMAT_VERSION
    version: int = Field(gt=0, le=MAX_VERSION)
    created_at: str
    method: str
    # What feeds the classifier: the router's task id ("task"), L2P's prompt set from the router ("prompt_set"),
    # or nothing (a single graph that also outputs task_id / task_confidence: "none").
    routing: Routing
    # `probabilities`/`class_id` range over the seen classes ("seen") or the routed task's classes ("routed_task").
    answer_scope: Literal["seen", "routed_task"] = "seen"
    backbone: Backbone
    preprocessing: Preprocessing
    class_names: list[str]
    class_to_task: list[int]
    tasks_learned: int = Field(gt=0)
    num_tasks: int = Field(gt=0)  # tasks of the run's protocol (tasks_learned ≤ num_tasks)
    seen_classes: list[int]
    tasks: list[TaskInfo] = []  # every task of the run, in order (empty in manifests written before names)
    graphs: dict[str, GraphSpec]  # "router" (unless routing is "none") and "classifier"
    shared_weights: SharedWeights | None = None  # None: every graph is self-contained (bundles before it)
    source: Source
    parity: Parity
    measurement: Measurement
    variants: list[Variant] = []
    rejected_variants: dict[str, str] = {}  # variant → why it was not published

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        classes = len(self.class_names)
        problems = []
        if len(self.class_to_task) != classes:
            problems.append(f"class_to_task has {len(self.class_to_task)} entries for {classes} classes")
        if any(not 0 <= t < self.num_tasks for t in self.class_to_task):
            problems.append("class_to_task names a task outside 0..num_tasks-1")
        if self.tasks_learned > self.num_tasks:
            problems.append(f"tasks_learned {self.tasks_learned} > num_tasks {self.num_tasks}")
        if sorted(set(self.seen_classes)) != sorted(self.seen_classes) or any(
                not 0 <= c < classes for c in self.seen_classes):
            problems.append("seen_classes must be distinct class indices")
        if any(self.class_to_task[c] >= self.tasks_learned for c in self.seen_classes if c < len(self.class_to_task)):
            problems.append("a seen class belongs to a task not learned yet")
        problems += self._task_problems()
        needed = {"classifier"} | ({"router"} if self.routing != "none" else set())
        if needed - set(self.graphs):
            problems.append(f"graphs lack {sorted(needed - set(self.graphs))}")
        if not self.parity.passed:
            problems.append("parity did not pass: such a bundle must not be published")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _task_problems(self) -> list[str]:
        """`tasks`, when given, lists tasks 0..num_tasks-1 agreeing with class_to_task and class_names."""
        if not self.tasks:
            return []
        if [t.task_id for t in self.tasks] != list(range(self.num_tasks)):
            return [f"tasks must list task ids 0..{self.num_tasks - 1} in order"]
        for task in self.tasks:
            ids = task.class_ids
            known = min(len(self.class_names), len(self.class_to_task))
            if any(not 0 <= c < known or self.class_to_task[c] != task.task_id for c in ids):
                return [f"task {task.task_id} lists classes that class_to_task puts elsewhere"]
            if task.class_names != [self.class_names[c] for c in ids]:
                return [f"task {task.task_id}'s class_names disagree with class_names"]
        return []

    # -- files ---------------------------------------------------------------------------------------------
    def write(self, folder: Path) -> Path:
        path = Path(folder) / MANIFEST
        path.write_text(self.model_dump_json(indent=1) + "\n")
        return path

    def task_of(self, class_id: int) -> int:
        return self.class_to_task[class_id]


def load_manifest(folder: str | Path, verify_files: bool = True) -> Manifest:
    """The validated manifest of bundle version `folder`; with `verify_files`, every graph's SHA-256 too."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise ManifestError(f"'{path}' not found: a bundle version folder holds manifest.json and its graphs "
                            "(make export RUN=<run> OUT=<bundle root>).")
    try:
        manifest = Manifest.model_validate(json.loads(path.read_text()))
    except (ValidationError, json.JSONDecodeError) as error:
        raise ManifestError(f"'{path}' is not a valid format-{FORMAT_VERSION} manifest: {error}") from None
    if version_of(Path(folder).name) not in (None, manifest.version):
        raise ManifestError(f"'{path}' says version {manifest.version} but sits in folder '{Path(folder).name}': "
                            "a version folder is named by its manifest's version (export it again).")
    if verify_files:
        for what, entry in _all_files(manifest):
            file = Path(folder) / entry.file
            if not is_inside(file, folder):
                raise ManifestError(f"bundle '{folder}': {what} file '{entry.file}' resolves outside the "
                                    "version folder (a symlink?): bundle files must live in their version folder.")
            if not file.is_file():
                raise ManifestError(f"bundle '{folder}': {what} file '{entry.file}' is missing.")
            if file_sha256(file) != entry.sha256:
                raise ManifestError(f"bundle '{folder}': '{entry.file}' does not match its SHA-256 in the manifest "
                                    "(modified or truncated): export the version again.")
    return manifest


def _all_files(manifest: Manifest):
    """(what, file entry) of every file the manifest lists: graphs, variants' graphs, the shared weights."""
    for name, graph in manifest.graphs.items():
        yield f"graph '{name}'", graph
    for variant in manifest.variants:
        for name, graph in variant.graphs.items():
            yield f"graph '{variant.name}/{name}'", graph
    if manifest.shared_weights is not None:
        yield "shared weights", manifest.shared_weights


def version_of(name: str) -> int | None:
    """The version a folder name stands for: ASCII decimal 1..2^63-1 without leading zeros, else None."""
    if not _VERSION_NAME.fullmatch(name) or int(name) > MAX_VERSION:
        return None
    return int(name)


def is_inside(path: Path, folder: Path) -> bool:
    """Whether `path`, with every symlink resolved, lies inside `folder` (also resolved)."""
    return Path(path).resolve().is_relative_to(Path(folder).resolve())


def scan_bundle_root(root: str | Path) -> tuple[list[int], list[str]]:
    """(complete versions oldest first, entries that are no version folder) of a bundle root.

    A version is a folder named by `version_of`, inside the root once symlinks are resolved, holding a manifest.
    Files the deployment loop keeps there (decisions.jsonl) and hidden entries (staging folders) are neither.
    """
    root = Path(root)
    if not root.is_dir():
        return [], []
    versions, ignored = [], []
    for entry in root.iterdir():
        version = version_of(entry.name)
        if version is None or not is_inside(entry, root) or not entry.is_dir():
            if not entry.name.startswith(".") and entry.name != DECISIONS:
                ignored.append(entry.name)
        elif (entry / MANIFEST).is_file():
            versions.append(version)
    return sorted(versions), sorted(ignored)


def bundle_versions(root: str | Path) -> list[int]:
    """Complete versions under a bundle root, oldest first (see `scan_bundle_root`)."""
    return scan_bundle_root(root)[0]


def json_schema() -> dict:
    return Manifest.model_json_schema()
