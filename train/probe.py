"""Linear probe of a frozen backbone on Split-Digits (all 10 classes): is the backbone any good?"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from .backbones.registry import EMBEDDED_BACKBONE, backbone_spec
from .backbones.vit import cls_features, create_vit, freeze
from .data.digits import digits_arrays, load_split_digits
from .distributed import init_distributed
from .pretrain import PretrainConfig, ensure_pretrained
from .weights import load_weights


@torch.no_grad()
def _features(vit: torch.nn.Module, images: torch.Tensor, batch: int = 256) -> np.ndarray:
    return torch.cat([cls_features(vit, images[i : i + batch]) for i in range(0, len(images), batch)]).numpy()


def probe_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray) -> float:
    """Test accuracy (%) of a logistic regression on standardised features."""
    scaler = StandardScaler().fit(train_x)
    classifier = LogisticRegression(max_iter=2000).fit(scaler.transform(train_x), train_y)
    return float(100.0 * (classifier.predict(scaler.transform(test_x)) == test_y).mean())


def linear_probe_accuracy(vit: torch.nn.Module) -> float:
    """The probe on the frozen backbone's CLS features."""
    train, test = load_split_digits(backbone_spec(EMBEDDED_BACKBONE))
    return probe_accuracy(_features(vit, train.tensors[0]), train.tensors[1].numpy(),
                          _features(vit, test.tensors[0]), test.tensors[1].numpy())


def pixel_probe_accuracy() -> float:
    """The probe on the raw 8×8 pixels: the bar a backbone's features should clear."""
    x_train, x_test, y_train, y_test = digits_arrays()
    return probe_accuracy(x_train.reshape(len(x_train), -1), y_train, x_test.reshape(len(x_test), -1), y_test)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--random", action="store_true", help="probe a randomly initialised backbone")
    parser.add_argument("--pixels", action="store_true", help="probe the raw pixels instead of a backbone")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.pixels:
        print(f"linear probe on Split-Digits (raw 8x8 pixels): {pixel_probe_accuracy():.1f}%")
        return 0
    torch.manual_seed(args.seed)
    spec = backbone_spec(EMBEDDED_BACKBONE)
    vit = create_vit(spec)
    if not args.random:
        load_weights(vit, spec, ensure_pretrained(PretrainConfig(), init_distributed()))
    accuracy = linear_probe_accuracy(freeze(vit))
    print(f"linear probe on Split-Digits ({'random' if args.random else 'pretrained'} {spec.name}): "
          f"{accuracy:.1f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
