"""The two exported graphs as torch modules over a restored method, and their export to ONNX.

Both close over the classes seen so far and the class→task map as constants, so each graph alone
answers its question (a Triton ensemble can chain them without Python).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from train import ContinualMethod, mask_logits, task_probability

from .manifest import LOGITS, PIXEL_VALUES, PROBABILITIES, PROMPT_IDS, ROUTER_LOGITS, TASK_CONFIDENCE, TASK_ID

OPSET = 17
EXPORTER = f"torch.onnx (dynamo=False) {torch.__version__.split('+')[0]}"


class RouterGraph(nn.Module):
    """`pixel_values` → the condition the classifier takes, the router's confidence (and its class logits)."""

    def __init__(self, method: ContinualMethod, seen: torch.Tensor):
        super().__init__()
        self.method = method
        self.register_buffer("seen", seen.clone(), persistent=False)

    def output_names(self, example: torch.Tensor) -> list[str]:
        """Names of the outputs (class logits only for routers that have them, i.e. HiDe's)."""
        condition = TASK_ID if self.method.routing == "task" else PROMPT_IDS
        with torch.no_grad():
            count = len(self(example))
        return [condition, TASK_CONFIDENCE, ROUTER_LOGITS][:count]

    def forward(self, pixel_values: torch.Tensor):
        route = self.method.route(pixel_values, self.seen)
        outputs = (route.condition, route.confidence)
        return outputs + (route.logits,) if route.logits is not None else outputs


class ClassifierGraph(nn.Module):
    """`pixel_values` (+ the router's condition) → class logits, and probabilities over the seen classes (over the
    routed task's classes when the method answers within the routed task: `--answer_scope routed_task`).

    Without a router (routing "none") it also gives the task of its class and that task's probability.
    """

    def __init__(self, method: ContinualMethod, seen: torch.Tensor):
        super().__init__()
        self.method = method
        self.register_buffer("seen", seen.clone(), persistent=False)

    def input_names(self) -> list[str]:
        condition = {"task": [TASK_ID], "prompt_set": [PROMPT_IDS], "none": []}[self.method.routing]
        return [PIXEL_VALUES] + condition

    def output_names(self) -> list[str]:
        return [LOGITS, PROBABILITIES] + ([TASK_ID, TASK_CONFIDENCE] if self.method.routing == "none" else [])

    def forward(self, pixel_values: torch.Tensor, condition: torch.Tensor | None = None):
        logits = self.method.classify(pixel_values, condition)
        probabilities = self.method.answer_logits(mask_logits(logits.float(), self.seen), condition).softmax(dim=1)
        if self.method.routing != "none":
            return logits, probabilities
        tasks = self.method.class_to_task[probabilities.argmax(dim=1)]
        return logits, probabilities, tasks, task_probability(mask_logits(logits, self.seen), tasks,
                                                               self.method.class_to_task)


def export_onnx(graph: nn.Module, example: tuple[torch.Tensor, ...], input_names: list[str],
                output_names: list[str], path: Path) -> None:
    """TorchScript-based export (0.5 s here, one self-contained file) with a dynamic batch axis."""
    dynamic = {name: {0: "batch"} for name in input_names + output_names}
    with torch.no_grad():
        torch.onnx.export(graph, example, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic, opset_version=OPSET, dynamo=False)
