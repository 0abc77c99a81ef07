"""`--download`: fetch the datasets torchvision can download into the layouts the loaders read.

torchvision's own classes do the fetching (their URLs, MD5 checks and extraction) into `--data-path`;
our readers then parse the files as they do for data users bring (`reference.py`). One rank at a time:
a file lock in the data folder makes the other ranks wait and then find the files.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .reference import DataLayoutError, Part, Reader

LOCK_FILE = ".hidecl-download.lock"


@dataclass(frozen=True)
class Download:
    title: str
    dataset_class: str  # in torchvision.datasets
    calls: tuple[dict, ...]  # keyword arguments of each construction (one per split the class needs)


DOWNLOADS: dict[str, Download] = {  # reader name (reference.READERS) → how torchvision fetches it
    "cifar100": Download("CIFAR-100", "CIFAR100", ({"train": True}, {"train": False})),
    "cifar10": Download("CIFAR-10", "CIFAR10", ({"train": True}, {"train": False})),
    "mnist": Download("MNIST", "MNIST", ({"train": True},)),
    "fashion_mnist": Download("Fashion-MNIST", "FashionMNIST", ({"train": True},)),
    "svhn": Download("SVHN", "SVHN", ({"split": "train"}, {"split": "test"})),
}


def source_url(name: str) -> str:
    """Where torchvision fetches `name` from (its first mirror)."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, DOWNLOADS[name].dataset_class)
    if hasattr(cls, "mirrors"):
        return f"{cls.mirrors[0]}{cls.resources[0][0]}"
    if hasattr(cls, "split_list"):
        return cls.split_list["train"][0]
    return cls.url


@contextmanager
def _one_rank_at_a_time(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with (root / LOCK_FILE).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def fetch(name: str, root: Path) -> None:
    """Download `name` into `root` with torchvision; a failure is one message naming the URL and folder."""
    import torchvision.datasets as tvd

    spec = DOWNLOADS[name]
    try:
        for kwargs in spec.calls:
            getattr(tvd, spec.dataset_class)(str(root), download=True, **kwargs)
    except Exception as error:  # network, mirror or archive: all the user's to fix, none a bug here
        reason = " ".join(str(error).split())[:300]
        raise UserError(f"--download could not fetch {spec.title} from {source_url(name)} into '{root}': "
                        f"{type(error).__name__}: {reason}. Check the connection (or proxy), or download it "
                        "yourself into that folder and run without --download.") from None


def downloading(reader: Reader, name: str) -> Reader:
    """`reader`, fetching its dataset first when its files are missing (under the data folder's lock)."""

    def read(root: Path) -> tuple[Part, Part]:
        with _one_rank_at_a_time(root):
            try:
                return reader(root)
            except DataLayoutError:
                fetch(name, root)
        return reader(root)

    return read
