"""ImageFolder layout: find, check, split and record the tasks, classes and images of a user's folders.

`ROOT/<task>/<class>/<image>`: one folder per task (sorted name order), one sub-folder per class (the class
name is the folder name). A task folder may instead hold `train/<class>/…` and `test/<class>/…` (or `val/`),
used as given; otherwise each class is split once (seeded, stratified) and the split is recorded with the
run (`<output_dir>/data_split.json`), so resume, export and evaluation see the same images. Everything read
from the user's folders is bounded (names, counts, bytes, pixels) and checked before any training: a problem
is one `UserError` naming it and the fix. Torch-free.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import warnings
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path, PurePosixPath

from PIL import Image, UnidentifiedImageError

from contract.images import to_rgb

from ..errors import UserError

FOLDER_DATASET = "ImageFolder"
SPLIT_FILE = "data_split.json"
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})  # any case
SPLIT_FOLDERS = ("train", "test", "val")  # a task folder holding train/ and test/ (or val/) is split as given
IGNORED_FOLDERS = frozenset({"__MACOSX"})  # archive debris, like hidden entries
MAX_NAME = 100  # characters of a task or class folder name
MAX_TASKS = 1000
MAX_CLASSES = 10_000  # per task
MAX_ENTRIES = 1_000_000  # directory entries looked at per task folder
MAX_FILE_BYTES = 256 << 20
MAX_PIXELS = 50_000_000  # the server's decode limit too: a decompression bomb is an error, not an out-of-memory
MIN_TEST = 1  # test images per class


@dataclass(frozen=True)
class FolderTask:
    """One task: its classes (sorted) and, per class, the image paths relative to `source` (POSIX form)."""

    name: str
    source: Path
    classes: tuple[str, ...]
    train: tuple[tuple[str, ...], ...]
    test: tuple[tuple[str, ...], ...]
    given_split: bool  # train/ and test/ (or val/) given by the user
    ignored: tuple[str, ...] = ()  # entries that are not images (relative paths), left out
    skipped: tuple[str, ...] = ()  # unreadable images ("path: why"); left out only with --skip-bad-images
    duplicates: int = 0  # images whose content is in both train and test of a given split

    def files(self, part: str) -> list[tuple[Path, int]]:
        """(absolute path, class index within the task) of every image of `part` ("train" or "test")."""
        lists = self.train if part == "train" else self.test
        return [(self.source / name, c) for c, names in enumerate(lists) for name in names]

    def to_record(self, key: str) -> dict:
        return {"source": key, "name": self.name, "given_split": self.given_split, "classes": list(self.classes),
                "train": {c: list(n) for c, n in zip(self.classes, self.train)},
                "test": {c: list(n) for c, n in zip(self.classes, self.test)},
                "ignored": len(self.ignored), "skipped": list(self.skipped), "duplicates": self.duplicates}


@dataclass(frozen=True)
class TaskSource:
    key: str  # how the split record names it: the folder name under ROOT, or the extra folder as given
    path: Path
    name: str


# -- names and listings ----------------------------------------------------------------------------------
def check_name(name: str, what: str, where: Path) -> str:
    """A task or class folder name fit to be a label: printable, no backslash, no edge blanks, ≤ MAX_NAME."""
    problem = ("is longer than {MAX_NAME} characters" if len(name) > MAX_NAME
               else "holds a character that is not printable" if not name.isprintable()
               else "holds a backslash" if "\\" in name
               else "starts or ends with a blank" if name != name.strip() else "")
    if problem:
        raise UserError(f"{what} folder name {name[:MAX_NAME]!r} in '{where}' {problem.format(MAX_NAME=MAX_NAME)}: "
                        "rename the folder (the name becomes the label the model answers with).")
    return name


def _hidden(name: str) -> bool:
    return name.startswith(".") or name in IGNORED_FOLDERS


def _listing(folder: Path, budget: list[int]) -> tuple[list[Path], list[Path]]:
    """(sub-folders, files) of `folder`, sorted by name; hidden entries (.DS_Store, .git, __MACOSX) count as
    files so they are reported as ignored. `budget` caps the entries looked at over a whole task folder."""
    folders, files = [], []
    with os.scandir(folder) as entries:
        for entry in entries:
            budget[0] -= 1
            if budget[0] < 0:
                raise UserError(f"'{folder}' and its task hold more than {MAX_ENTRIES} entries: split the data "
                                "into more task folders.")
            is_dir = entry.is_dir() and not _hidden(entry.name)
            (folders if is_dir else files).append(Path(entry.path))
    return sorted(folders), sorted(files)


def _class_images(folder: Path, budget: list[int], ignored: list[Path]) -> list[Path]:
    subfolders, files = _listing(folder, budget)
    ignored.extend(subfolders)
    images = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES and not _hidden(f.name)]
    ignored.extend(sorted(set(files) - set(images)))
    return images


def _split_folders(task_dir: Path, subfolders: list[Path]) -> tuple[Path, Path] | None:
    """`train/` and `test/` (else `val/`) among a task's sub-folders (any case), when both are there."""
    by_name = {f.name.lower(): f for f in subfolders}
    test = by_name.get("test") or by_name.get("val")
    return (by_name["train"], test) if "train" in by_name and test is not None else None


# -- images ------------------------------------------------------------------------------------------------
def image_problem(path: Path) -> tuple[str | None, str]:
    """(why the file is not a usable image or None, SHA-256 of its bytes): decoded in full, size-checked."""
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        return f"{size} bytes, more than the {MAX_FILE_BYTES >> 20} MiB allowed per image", ""
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height > MAX_PIXELS:
                    return (f"{image.width}x{image.height} is more than {MAX_PIXELS} pixels (decompression-bomb "
                            "limit): downscale it"), digest
                image.draft("RGB", (64, 64))  # JPEG: decode at a reduced scale; still reads every byte
                image.load()
                to_rgb(image)  # what training does with it (EXIF orientation, mode conversion)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        return f"too many pixels ({error})", digest
    except UnidentifiedImageError:
        return "not an image Pillow can read", digest
    except (OSError, SyntaxError, ValueError, EOFError) as error:  # truncated or corrupt data
        return f"unreadable ({' '.join(str(error).split())[:120]})", digest
    return None, digest


def _verified(images: list[Path], skipped: list[str], root: Path) -> tuple[list[Path], list[str]]:
    """(readable images, their SHA-256); unreadable ones are appended to `skipped` as "path: why"."""
    good, digests = [], []
    for path in images:
        problem, digest = image_problem(path)
        if problem:
            skipped.append(f"{path.relative_to(root).as_posix()}: {problem}")
        else:
            good.append(path)
            digests.append(digest)
    return good, digests


# -- one task folder -----------------------------------------------------------------------------------------
def _needed(test_fraction: float, min_train: int) -> int:
    """Images a class needs for the split to leave `min_train` to train on and at least one to test."""
    n = min_train + MIN_TEST
    while n - _test_count(n, test_fraction) < min_train:
        n += 1
    return n


def _test_count(n: int, test_fraction: float) -> int:
    return max(MIN_TEST, int(test_fraction * n + 0.5))


def _split_class(files: list[str], test_fraction: float, seed: int, task: str, name: str) -> tuple[list, list]:
    """Seeded per class (adding a class never moves another's images): (train, test), each sorted."""
    shuffled = sorted(files)
    random.Random(f"{seed}/{task}/{name}").shuffle(shuffled)
    cut = _test_count(len(files), test_fraction)
    return sorted(shuffled[cut:]), sorted(shuffled[:cut])


def _scan_task(task_dir: Path, name: str, test_fraction: float, split_seed: int, min_train: int) -> FolderTask:
    """The task folder scanned, verified and split; unreadable images are in `skipped` (the caller decides).

    Decoding every image is the slow part: a process checking then loading the same unchanged folder (check_inputs,
    both HiDe stages, export) does it once; any added, removed or rewritten file changes the fingerprint."""
    if not task_dir.is_dir():
        raise UserError(f"task folder '{task_dir}' does not exist (or is not a folder).")
    return _scan_unchanged(task_dir, name, test_fraction, split_seed, min_train, _fingerprint(task_dir))


def _fingerprint(task_dir: Path) -> int:
    """Hash of every entry's path, size and modification time down to train/<class>/<image> (bounded)."""
    digest, seen = hashlib.sha256(), 0
    for folder, dirs, files in os.walk(task_dir):
        depth = len(Path(folder).relative_to(task_dir).parts)
        dirs[:] = sorted(dirs) if depth < 2 else []
        for entry in sorted(files) + dirs:
            seen += 1
            if seen > MAX_ENTRIES:
                raise UserError(f"task folder '{task_dir}' holds more than {MAX_ENTRIES} entries: split the data "
                                "into more task folders.")
            stat = os.stat(os.path.join(folder, entry))
            digest.update(f"{folder}/{entry}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return int.from_bytes(digest.digest()[:8], "big")


@lru_cache(maxsize=64)
def _scan_unchanged(task_dir: Path, name: str, test_fraction: float, split_seed: int, min_train: int,
                    fingerprint: int) -> FolderTask:
    budget, ignored, skipped = [MAX_ENTRIES], [], []
    subfolders, files = _listing(task_dir, budget)
    ignored.extend(files)
    given = _split_folders(task_dir, subfolders)
    parts = {"train": given[0], "test": given[1]} if given else {"all": task_dir}
    if given:
        ignored.extend(f for f in subfolders if f not in given)
    per_part: dict[str, dict[str, list[Path]]] = {}
    for part, folder in parts.items():
        classes, loose = _listing(folder, budget) if part != "all" else (subfolders, [])
        ignored.extend(loose)
        per_part[part] = {check_name(c.name, "class", folder): _class_images(c, budget, ignored) for c in classes}
    names = sorted(set().union(*per_part.values()))
    if not names:
        deep = any(f.suffix.lower() in IMAGE_SUFFIXES for f in files)
        hint = (f" It holds images itself: is '{task_dir.parent}' one level too deep? The data path holds task "
                "folders, each holding class folders." if deep else "")
        raise UserError(f"task folder '{task_dir}' has no class sub-folders: put each class's images in a folder "
                        f"named after the class, e.g. '{task_dir}/cat/1.jpg' (or train/<class>/ and test/<class>/)."
                        + hint)
    if len(names) > MAX_CLASSES:
        raise UserError(f"task folder '{task_dir}' has {len(names)} classes, more than {MAX_CLASSES}.")
    verified = {part: {c: _verified(images, skipped, task_dir) for c, images in classes.items()}
                for part, classes in per_part.items()}
    _check_counts(task_dir, names, verified, given is not None, test_fraction, min_train)

    def rel(paths: list[Path]) -> list[str]:
        return [p.relative_to(task_dir).as_posix() for p in paths]

    if given:
        train = [rel(verified["train"].get(c, ([], []))[0]) for c in names]
        test = [rel(verified["test"].get(c, ([], []))[0]) for c in names]
        train_digests = {d for c in names for d in verified["train"].get(c, ([], []))[1]}
        duplicates = sum(d in train_digests for c in names for d in verified["test"].get(c, ([], []))[1])
    else:
        pairs = [_split_class(rel(verified["all"][c][0]), test_fraction, split_seed, name, c) for c in names]
        train, test, duplicates = [p[0] for p in pairs], [p[1] for p in pairs], 0
    return FolderTask(name, task_dir, tuple(names), tuple(map(tuple, train)), tuple(map(tuple, test)),
                      given is not None, tuple(p.relative_to(task_dir).as_posix() for p in ignored), tuple(skipped),
                      duplicates)


def _check_counts(task_dir: Path, names: list[str], verified: dict, given: bool, test_fraction: float,
                  min_train: int) -> None:
    """Every class has enough readable images to train on and to test: one message listing every short one."""
    short = []
    if given:
        for c in names:
            for part, needed in (("train", min_train), ("test", MIN_TEST)):
                has = len(verified[part].get(c, ([], []))[0])
                if has < needed:
                    short.append(f"class '{c}' has {has} readable {part} image(s), needs at least {needed}")
    else:
        needed = _needed(test_fraction, min_train)
        for c in names:
            has = len(verified["all"][c][0])
            if has < needed:
                short.append(f"class '{c}' has {has} readable image(s), needs at least {needed}")
    if short:
        why = ("" if given else f" ({min_train} to train on and {MIN_TEST} to test at test_fraction {test_fraction})")
        raise UserError(f"task folder '{task_dir}': " + "; ".join(short) + f"{why}. Add images to "
                        "these class folders (or remove the class).")


def load_folder_task(task_dir: Path, test_fraction: float = 0.2, split_seed: int = 0, skip_bad_images: bool = False,
                     min_train: int = 1, name: str | None = None) -> FolderTask:
    """One folder of `<class>/<image>` (or `train|test/<class>/<image>`) as a task, checked and split."""
    task_dir = Path(task_dir)
    task = _scan_task(task_dir, name or _folder_name(task_dir), test_fraction, split_seed, min_train)
    if task.skipped and not skip_bad_images:
        raise bad_images_error([task])
    return task


def _folder_name(folder: Path) -> str:
    return folder.name or folder.resolve().name


def bad_images_error(tasks: list[FolderTask]) -> UserError:
    lines = [f"  {task.source / entry}" for task in tasks for entry in task.skipped]
    return UserError(f"{len(lines)} image file(s) cannot be read:\n" + "\n".join(lines)
                     + "\nReplace or delete them, or pass --skip-bad-images to train without them.")


# -- all tasks of a run ----------------------------------------------------------------------------------------
def task_sources(data) -> list[TaskSource]:
    """ImageFolder: ROOT's task folders in sorted name order; then (any dataset) `data.extra_task_dirs` in order."""
    sources = _root_sources(data) if data.dataset == FOLDER_DATASET else []
    if len(sources) + len(data.extra_task_dirs) > MAX_TASKS:
        raise UserError(f"'{data.data_path}' and data.extra_task_dirs hold more than {MAX_TASKS} tasks.")
    for extra in data.extra_task_dirs:
        path = Path(extra)
        if not path.is_dir():
            raise UserError(f"task folder '{extra}' does not exist (or is not a folder): pass a folder of "
                            "<class>/<image> (or train/<class>/<image> and test/<class>/<image>).")
        sources.append(TaskSource(str(extra), path, check_name(_folder_name(path), "task", path.parent)))
    return sources


def _root_sources(data) -> list[TaskSource]:
    root = Path(data.data_path)
    if not data.data_path or not root.is_dir():
        raise UserError(f"dataset {FOLDER_DATASET} needs --data-path ROOT, a folder of <task>/<class>/<image> "
                        f"('{data.data_path}' is {'not given' if not data.data_path else 'not a folder'}).")
    folders, _ = _listing(root, [MAX_ENTRIES])
    if len(folders) > MAX_TASKS:
        raise UserError(f"'{root}' holds {len(folders)} task folders, more than {MAX_TASKS}.")
    if not folders:
        raise UserError(f"'{root}' holds no task folder: put each task's class folders in a folder of its own, "
                        f"e.g. '{root}/task1/cat/1.jpg'.")
    return [TaskSource(f.name, f, check_name(f.name, "task", root)) for f in folders]


def folder_num_tasks(data) -> int:
    return len(task_sources(data))


def folder_tasks(data, run_dir: str | Path | None = None, min_train: int = 1,
                 known: tuple[str, ...] = ()) -> list[FolderTask]:
    """Every folder task of the run: the recorded split for the tasks it holds, new tasks scanned, checked and
    split. `known`: the class names of a built-in dataset the tasks come after (none may be reused)."""
    sources = task_sources(data)
    recorded = read_split_record(run_dir) if run_dir else []
    for index, (record, source) in enumerate(zip(recorded, sources)):
        if record["source"] != source.key:
            raise UserError(f"the run's recorded split ({Path(run_dir) / SPLIT_FILE}) has task {index + 1} "
                            f"'{record['source']}' where the data now has '{source.key}': tasks can only be added "
                            "after the last one (or start a new run).")
    # A record holding more tasks than `data` is a run that grew after the checkpoint this config comes from
    # (export of an earlier task): its first tasks are this data's.
    tasks = [from_record(r, s) for r, s in zip(recorded, sources)]
    tasks += [_scan_task(s.path, s.name, data.test_fraction, data.split_seed, min_train)
              for s in sources[len(recorded):]]
    fresh = tasks[len(recorded):]
    if any(t.skipped for t in fresh) and not data.skip_bad_images:
        raise bad_images_error(fresh)
    first = 0 if data.dataset == FOLDER_DATASET else max(0, data.num_tasks - len(tasks))  # a benchmark's own
    _check_new_names(tasks, known, data.dataset, first)
    return tasks


def _check_new_names(tasks: list[FolderTask], known: tuple[str, ...], dataset: str, first: int = 0) -> None:
    """Task names (they label results) and class names (the model's answers) are unique across the run."""
    owner: dict[str, int] = {}
    task_names = [t.name for t in tasks]
    known_ids = {name: c for c, name in enumerate(known)}
    for index, task in enumerate(tasks):
        if task_names.index(task.name) != index:
            raise UserError(f"task {first + index + 1} ('{task.source}') has the name '{task.name}' of task "
                            f"{first + task_names.index(task.name) + 1}: rename its folder.")
        for name in task.classes:
            if name in known_ids:
                raise UserError(f"class '{name}' of '{task.source}' is already a class of {dataset} (class id "
                                f"{known_ids[name]}): every task must bring new classes. Rename the folder.")
            if name in owner:
                earlier = tasks[owner[name]]
                raise UserError(f"class '{name}' of task {first + index + 1} ('{task.source}') is already a class of "
                                f"task {first + owner[name] + 1} ('{earlier.name}', {earlier.source}): every task must "
                                "bring new classes. Rename the folder, or put its images in that earlier task's "
                                "folder.")
            owner[name] = index


def summary(tasks: list[FolderTask]) -> list[str]:
    """What the log says about the data: counts, ignored files, skipped images, duplicates."""
    classes = sum(len(t.classes) for t in tasks)
    train = sum(len(n) for t in tasks for n in t.train)
    test = sum(len(n) for t in tasks for n in t.test)
    lines = [f"{FOLDER_DATASET}: {len(tasks)} task(s), {classes} classes, {train} train / {test} test images"]
    ignored = [f"{t.name}/{i}" for t in tasks for i in t.ignored]
    if ignored:
        lines.append(f"ignored {len(ignored)} entries that are not images: {', '.join(ignored[:5])}"
                     + (", …" if len(ignored) > 5 else ""))
    skipped = [f"{t.source / s}" for t in tasks for s in t.skipped]
    if skipped:
        lines.append(f"skipped {len(skipped)} unreadable image(s) (--skip-bad-images):\n  " + "\n  ".join(skipped))
    for t in tasks:
        if t.duplicates:
            lines.append(f"warning: task '{t.name}': {t.duplicates} test image(s) have the same content as a train "
                         "image (its train/ and test/ overlap: test accuracy will be optimistic)")
    return lines


# -- the recorded split ------------------------------------------------------------------------------------------
def read_split_record(run_dir: str | Path) -> list[dict]:
    """The tasks of `<run_dir>/data_split.json` (none when the run has no record yet)."""
    path = Path(run_dir) / SPLIT_FILE
    if not path.is_file():
        return []
    try:
        tasks = json.loads(path.read_text())["tasks"]
        for task in tasks:
            _ = (str(task["source"]), str(task["name"]), bool(task["given_split"]))
            for part in ("train", "test"):
                for c in task["classes"]:
                    if any(PurePosixPath(n).is_absolute() or ".." in PurePosixPath(n).parts for n in task[part][c]):
                        raise ValueError("a path leaves its task folder")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise UserError(f"'{path}' is not a valid split record ({error}): restore it, or start a new run.") from None
    return tasks


def from_record(record: dict, source: TaskSource) -> FolderTask:
    classes = tuple(record["classes"])
    task = FolderTask(record["name"], source.path, classes, tuple(tuple(record["train"][c]) for c in classes),
                      tuple(tuple(record["test"][c]) for c in classes), record["given_split"],
                      skipped=tuple(record.get("skipped", ())), duplicates=record.get("duplicates", 0))
    missing = [p for part in ("train", "test") for p, _ in task.files(part) if not p.is_file()]
    if missing:
        raise UserError(f"{len(missing)} image(s) of the run's recorded split are gone from '{source.path}' "
                        f"(e.g. {missing[0]}): restore them, or start a new run.")
    return task


def split_record(data, tasks: list[FolderTask]) -> dict:
    sources = task_sources(data)
    return {"format": 1, "dataset": FOLDER_DATASET, "data_path": str(data.data_path),
            "test_fraction": data.test_fraction, "split_seed": data.split_seed,
            "tasks": [t.to_record(s.key) for t, s in zip(tasks, sources)]}


def write_split_record(run_dir: str | Path, record: dict) -> Path:
    """`<run_dir>/data_split.json`, replaced atomically (a reader sees the old record or the new one). A record
    only grows: one whose tasks begin with all of `record`'s (a rerun with the config of an earlier task) stays."""
    path = Path(run_dir) / SPLIT_FILE
    sources = [t["source"] for t in record["tasks"]]
    try:
        existing = [t["source"] for t in read_split_record(run_dir)]
    except UserError:  # a damaged record of an earlier run: this one replaces it
        existing = []
    if len(existing) > len(sources) and existing[:len(sources)] == sources:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{SPLIT_FILE}.{os.getpid()}.partial")
    partial.write_text(json.dumps(record, indent=1))
    os.replace(partial, path)
    return path


def resolve_folder_tasks(config):
    """An ImageFolder run takes its task count from the data (task folders + extra folders); the prompt pool
    holds at least one slot per task. Other datasets: unchanged."""
    if config.data.dataset != FOLDER_DATASET:
        return config
    tasks = 1 if config.data.merge_tasks else folder_num_tasks(config.data)
    return replace(config, data=replace(config.data, num_tasks=tasks),
                   adapter=replace(config.adapter, slots=max(config.adapter.slots, tasks)))
