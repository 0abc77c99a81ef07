"""onnxruntime against PyTorch on a test split: the check a bundle must pass before it is published."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from train import ContinualMethod, mask_logits, per_task_accuracy

from .manifest import LOGITS, PROBABILITIES, PROMPT_IDS, ROUTER_LOGITS, TASK_ID, Parity
from .runtime import TwoStep

TOLERANCE = 1e-4  # max abs logit difference allowed in fp32
BATCH = 64


@dataclass(frozen=True)
class Comparison:
    parity: Parity
    accuracy: float  # % of the served (onnxruntime) top-1 classes that are right
    predictions: np.ndarray  # served top-1 classes
    accuracy_per_task: list[float]  # the same per learned task (test images of that task's classes)


@torch.no_grad()
def torch_two_step(method: ContinualMethod, seen: torch.Tensor, x: torch.Tensor):
    """(router condition or None, router logits or None, class logits) as the method computes them."""
    if method.routing == "none":
        return None, None, method.classify(x, None)
    route = method.route(x, seen)
    return route.condition, route.logits, method.classify(x, route.condition)


def compare(method: ContinualMethod, seen: torch.Tensor, runner: TwoStep, images: torch.Tensor,
            labels: torch.Tensor, dataset: str) -> Comparison:
    """Run both on every image (in batches) and measure how far apart they are."""
    same_route, same_class, served = [], [], []
    logit_diff, router_diff = 0.0, None
    for x, y in zip(images.split(BATCH), labels.split(BATCH)):
        condition, router_logits, logits = torch_two_step(method, seen, x)
        out = runner(x.numpy())
        if condition is not None:
            ours = out[TASK_ID if method.routing == "task" else PROMPT_IDS]
            same_route.append((ours == condition.numpy()).reshape(len(y), -1).all(axis=1))
        if router_logits is not None:
            diff = np.abs(out[ROUTER_LOGITS] - router_logits.numpy())[:, seen.numpy()].max()
            router_diff = max(router_diff or 0.0, float(diff))
        logit_diff = max(logit_diff, float(np.abs(out[LOGITS] - logits.numpy()).max()))
        predicted = out[PROBABILITIES].argmax(axis=1)
        same_class.append(predicted == method.answer_logits(mask_logits(logits, seen), condition).argmax(dim=1).numpy())
        served.append(predicted)
    served = np.concatenate(served)
    route_agreement = float(np.concatenate(same_route).mean()) if same_route else None
    class_agreement = float(np.concatenate(same_class).mean())
    passed = (class_agreement == 1.0 and route_agreement in (None, 1.0) and logit_diff <= TOLERANCE
              and (router_diff is None or router_diff <= TOLERANCE))
    parity = Parity(dataset=dataset, samples=len(labels), tolerance=TOLERANCE, router_task_agreement=route_agreement,
                    class_agreement=class_agreement, max_abs_logit_diff=logit_diff,
                    router_max_abs_logit_diff=router_diff, passed=passed)
    labels = labels.numpy()
    return Comparison(parity, float((served == labels).mean() * 100), served,
                      per_task_accuracy(served, labels, method.class_to_task.numpy()))


def describe_failure(parity: Parity) -> str:
    """Which graph is off, and by how much."""
    problems = []
    if parity.router_task_agreement not in (None, 1.0):
        problems.append(f"router.onnx routes {100 * (1 - parity.router_task_agreement):.2f}% of samples elsewhere")
    if parity.router_max_abs_logit_diff is not None and parity.router_max_abs_logit_diff > parity.tolerance:
        problems.append(f"router.onnx logits differ by up to {parity.router_max_abs_logit_diff:.2e}")
    if parity.max_abs_logit_diff > parity.tolerance:
        problems.append(f"classifier.onnx logits differ by up to {parity.max_abs_logit_diff:.2e}")
    if parity.class_agreement != 1.0:
        problems.append(f"{100 * (1 - parity.class_agreement):.2f}% of final classes differ")
    return (f"parity with PyTorch failed on {parity.samples} {parity.dataset} test images "
            f"(tolerance {parity.tolerance:.0e}): " + "; ".join(problems))
