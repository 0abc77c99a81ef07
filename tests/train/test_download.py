"""`--download`: torchvision's real download and extraction code, served from a local mirror (no internet).

The mirror holds archives in the genuine formats (CIFAR tar.gz of python pickles, gzipped MNIST idx, SVHN
.mat); torchvision's URLs and MD5s are pointed at it, so its whole fetch → check → extract path runs and
our readers then parse what it wrote.
"""

from __future__ import annotations

import functools
import hashlib
import pickle
import tarfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets as tvd

from tests.helpers import dataset_files
from train.backbones.registry import backbone_spec
from train.cli import parse_invocation
from train.config import DataConfig
from train.data import download, reference
from train.data.registry import check_loadable, load_dataset
from train.errors import UserError

SPEC = backbone_spec("vit_glyph_patch8_32")


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _tar(folder: Path, archive: Path) -> None:
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)


class Mirror:
    """A local HTTP server over a folder: torchvision's URLs are pointed at it."""

    def __init__(self, folder: Path):
        handler = functools.partial(SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *args: None
        self.folder, self.server = folder, ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self, path: Path) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{path.relative_to(self.folder).as_posix()}"


def _serve_cifar(monkeypatch, src: Path, mirror: Mirror, cls, folder: str, train: list[str], test: list[str],
                 meta: str) -> None:
    archive = mirror.folder / f"{folder.replace('-batches', '')}.tar.gz"
    _tar(src / folder, archive)
    monkeypatch.setattr(cls, "url", mirror.url(archive))
    monkeypatch.setattr(cls, "tgz_md5", md5(archive))
    monkeypatch.setattr(cls, "train_list", [[n, md5(src / folder / n)] for n in train])
    monkeypatch.setattr(cls, "test_list", [[n, md5(src / folder / n)] for n in test])
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": md5(src / folder / meta)})


def serve_cifar100(monkeypatch, src: Path, mirror: Mirror) -> None:
    dataset_files.write_cifar100(src)
    _serve_cifar(monkeypatch, src, mirror, tvd.CIFAR100, "cifar-100-python", ["train"], ["test"], "meta")


def serve_cifar10(monkeypatch, src: Path, mirror: Mirror) -> None:
    dataset_files.write_cifar10(src)
    with (src / "cifar-10-batches-py" / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f, protocol=2)
    _serve_cifar(monkeypatch, src, mirror, tvd.CIFAR10, "cifar-10-batches-py",
                 [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta")


def _serve_mnist_like(monkeypatch, src: Path, mirror: Mirror, cls, name: str) -> None:
    dataset_files.write_mnist_like(src, name, gz=True)
    files = sorted((src / name / "raw").iterdir())
    (mirror.folder / name).mkdir()
    for f in files:
        (mirror.folder / name / f.name).write_bytes(f.read_bytes())
    monkeypatch.setattr(cls, "mirrors", [mirror.url(mirror.folder / name) + "/"])
    monkeypatch.setattr(cls, "resources", [(f.name, md5(f)) for f in files])


def serve_svhn(monkeypatch, src: Path, mirror: Mirror) -> None:
    dataset_files.write_svhn(src)
    listing = {}
    for split in ("train", "test"):
        served = mirror.folder / f"{split}_32x32.mat"
        served.write_bytes((src / served.name).read_bytes())
        listing[split] = [mirror.url(served), served.name, md5(served)]
    monkeypatch.setattr(tvd.SVHN, "split_list", listing)


SERVERS = {
    "cifar100": serve_cifar100,
    "cifar10": serve_cifar10,
    "mnist": lambda mp, s, m: _serve_mnist_like(mp, s, m, tvd.MNIST, "MNIST"),
    "fashion_mnist": lambda mp, s, m: _serve_mnist_like(mp, s, m, tvd.FashionMNIST, "FashionMNIST"),
    "svhn": serve_svhn,
}
DATASET_OF = {"cifar100": "Split-CIFAR100", "cifar10": "Split-CIFAR10", "mnist": "Split-MNIST",
              "fashion_mnist": "Split-FashionMNIST", "svhn": "Split-SVHN"}


@pytest.fixture()
def mirror(tmp_path, monkeypatch):
    """serve(name) → the folder holding the source files now served by torchvision's (patched) URLs."""
    (tmp_path / "mirror").mkdir()
    server = Mirror(tmp_path / "mirror")
    for variable in ("no_proxy", "NO_PROXY"):  # a proxy for the package registries must not catch 127.0.0.1
        monkeypatch.setenv(variable, "127.0.0.1,localhost")

    def serve(name: str) -> Path:
        src = tmp_path / "src" / name
        SERVERS[name](monkeypatch, src, server)
        return src

    yield serve
    server.server.shutdown()
    server.server.server_close()


@pytest.mark.parametrize("name", DATASET_OF)
def test_download_writes_the_layout_our_readers_parse(tmp_path, mirror, name):
    src = mirror(name)
    target = tmp_path / "data" / "not-yet-there"
    with pytest.raises(UserError, match="--download"):  # without the flag: the layout message, naming the fix
        load_dataset(DataConfig(dataset=DATASET_OF[name], data_path=str(target)), SPEC)
    data = load_dataset(DataConfig(dataset=DATASET_OF[name], data_path=str(target), download=True), SPEC)
    ours, original = reference.READERS[name](target), reference.READERS[name](src)
    for got, want in zip(ours, original, strict=True):  # pixel- and label-exact after torchvision's extraction
        np.testing.assert_array_equal(got.images, want.images)
        np.testing.assert_array_equal(got.labels, want.labels)
    assert data.train[0][0].shape == (3, 32, 32) and len(data.test) == len(original[1].labels)
    assert load_dataset(DataConfig(dataset=DATASET_OF[name], data_path=str(target)), SPEC)  # now there: no flag


def test_five_datasets_fetches_each_downloadable_member_once(tmp_path, mirror, monkeypatch):
    for name in ("svhn", "mnist", "cifar10", "fashion_mnist"):
        mirror(name)
    calls = []
    real_fetch = download.fetch
    monkeypatch.setattr(download, "fetch", lambda name, root: (calls.append(name), real_fetch(name, root)))
    target = tmp_path / "data"
    config = DataConfig(dataset="5-datasets", data_path=str(target), download=True)
    with pytest.raises(UserError) as error:  # notMNIST is not torchvision's: its own message
        load_dataset(config, SPEC)
    assert "notMNIST" in str(error.value) and "--download fetches only" in str(error.value)
    dataset_files.write_not_mnist(target)
    data = load_dataset(config, SPEC)
    assert calls == ["svhn", "mnist", "cifar10", "fashion_mnist"]  # fetched once, in the reference order
    assert data.num_classes == 50 and int(data.train_targets.max()) == 49


def test_ranks_wait_for_one_download(tmp_path, mirror, monkeypatch):
    """Two loaders at once (as two ranks): one fetches under the folder's lock, the other then finds the files."""
    mirror("cifar10")
    calls = []
    real_fetch = download.fetch

    def slow_fetch(name, root):
        calls.append(name)
        time.sleep(0.5)
        real_fetch(name, root)

    monkeypatch.setattr(download, "fetch", slow_fetch)
    config = DataConfig(dataset="Split-CIFAR10", data_path=str(tmp_path / "data"), download=True)
    sizes, errors = [], []

    def load() -> None:
        try:
            sizes.append(len(load_dataset(config, SPEC).train))
        except Exception as error:  # noqa: BLE001  (reported by the assertion below)
            errors.append(error)

    threads = [threading.Thread(target=load) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and sizes == [50, 50] and calls == ["cifar10"]


def test_a_failing_download_is_one_message_naming_url_and_folder(tmp_path, monkeypatch):
    url = (tmp_path / "nowhere" / "cifar-10-python.tar.gz").as_uri()
    monkeypatch.setattr(tvd.CIFAR10, "url", url)
    target = tmp_path / "data"
    with pytest.raises(UserError) as error:
        load_dataset(DataConfig(dataset="Split-CIFAR10", data_path=str(target), download=True), SPEC)
    message = str(error.value)
    assert url in message and str(target) in message and "CIFAR-10" in message
    assert "\n" not in message and error.value.__cause__ is None and error.value.__suppress_context__


def test_download_flag_reaches_the_config_and_the_early_check():
    assert parse_invocation(["cifar100_hideprompt_5e", "--download"]).config.data.download is True
    assert parse_invocation(["cifar100_hideprompt_5e", "data.download=true"]).config.data.download is True
    assert parse_invocation(["cifar100_hideprompt_5e"]).config.data.download is False
    assert check_loadable("Split-SVHN", "/nonexistent/hidecl", download=True)  # the download creates it
    with pytest.raises(UserError, match="does not exist"):
        check_loadable("Split-SVHN", "/nonexistent/hidecl")
    with pytest.raises(UserError, match="imagenet-r"):  # --download cannot make ImageNet-R appear
        check_loadable("Split-Imagenet-R", "/nonexistent/hidecl", download=True)


def test_every_download_source_is_torchvisions():
    assert download.source_url("cifar100") == tvd.CIFAR100.url
    assert download.source_url("svhn") == tvd.SVHN.split_list["train"][0]
    assert download.source_url("mnist").startswith(tvd.MNIST.mirrors[0])
    assert set(download.DOWNLOADS) <= set(reference.READERS)
