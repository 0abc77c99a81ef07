"""Build the project's container images with podman, cached by a digest of everything that goes into them.

    python3 -m deploy.image serve|train [--base IMAGE] [--build-arg K=V ...] [--rebuild]

The tag is `localhost/hidecl-<name>:<digest>` (also `:latest`): the digest covers the Containerfile, every
file its COPY lines bring in, the build arguments and the base image's id, so an unchanged image is found,
not rebuilt. Without --base the Containerfile's default (python:3.11-slim) is used when it is present or can
be pulled, else a local Debian bookworm base is made once (deploy/base-image.sh: no registry needed).
The build sees the host's CA bundle (PIP_CERT) and local package indexes, so it works behind a proxy and
offline mirrors; those only change how packages are fetched, not the digest. Stdlib only (no venv needed).
"""

from __future__ import annotations

import argparse
import configparser
import contextlib
import fcntl
import hashlib
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
NAMES = ("serve", "train")
DEFAULT_BASE = "python:3.11-slim"
LOCAL_BASE = "localhost/debian-min:bookworm"
CA_INSIDE = "/host-ca.crt"
SKIPPED = {"__pycache__", "_stubs"}  # build outputs the context ignores (.containerignore)
PIP_CONFIGS = (Path("/etc/pip.conf"), Path.home() / ".config" / "pip" / "pip.conf", Path.home() / ".pip" / "pip.conf")


class ImageError(RuntimeError):
    """A build that cannot start or failed; the message says why and what to do."""


@contextlib.contextmanager
def locked(what: str):
    """One builder at a time per image on this machine (tests, `make image`, other checkouts): a second one
    waits, then finds the image built."""
    with open(Path(os.environ.get("TMPDIR", "/var/tmp")) / f"hidecl-image-{what}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def podman(*args: str, check: bool = True, quiet: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.PIPE if quiet else None
    done = subprocess.run(["podman", *args], stdout=out, stderr=out, text=True)
    if check and done.returncode != 0:
        raise ImageError(f"podman {shlex.join(args)} failed:\n{(done.stderr or '')[-3000:]}")
    return done


def containerfile(name: str) -> Path:
    return DEPLOY / f"Containerfile.{name}"


def copied_sources(text: str) -> list[str]:
    """The build-context paths of a Containerfile's COPY lines (not `COPY --from=`)."""
    sources = []
    for line in re.sub(r"\\\n", " ", text).splitlines():
        words = shlex.split(line.split("#", 1)[0]) if line.strip().upper().startswith("COPY ") else []
        if words and not any(w.startswith("--from") for w in words):
            sources += [w for w in words[1:-1] if not w.startswith("--")]
    return sources


def context_files(sources: list[str]) -> list[Path]:
    files = []
    for source in sources:
        path = REPO / source
        if not path.exists():
            raise ImageError(f"COPY source '{source}' is missing from {REPO}.")
        found = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
        files += [p for p in found if not SKIPPED & set(p.relative_to(REPO).parts)]
    return sorted(set(files))


def digest(name: str, build_args: dict[str, str], base_id: str) -> str:
    """What the image is made of: Containerfile, copied files, build arguments, base image id."""
    text = containerfile(name).read_text()
    h = hashlib.sha256(text.encode())
    for file in context_files(copied_sources(text)):
        h.update(f"\0{file.relative_to(REPO)}\0".encode() + file.read_bytes())
    h.update(repr(sorted(build_args.items())).encode() + base_id.encode())
    return h.hexdigest()[:16]


def image_id(image: str) -> str | None:
    done = podman("image", "inspect", "--format", "{{.Id}}", image, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def pick_base(given: str | None) -> str:
    """The base image: `given`, else python:3.11-slim if present or pullable, else the local Debian base."""
    if given:
        if image_id(given) is None:
            podman("pull", given, quiet=False)
        return given
    if image_id(DEFAULT_BASE) or podman("pull", "-q", f"docker.io/library/{DEFAULT_BASE}", check=False).returncode == 0:
        return DEFAULT_BASE
    print(f"{DEFAULT_BASE} cannot be pulled here: using the local base {LOCAL_BASE}", file=sys.stderr)
    with locked("base"):
        subprocess.run(["bash", str(DEPLOY / "base-image.sh"), LOCAL_BASE], check=True)
    return LOCAL_BASE


def _pip_setting(env_name: str, key: str) -> str:
    if os.environ.get(env_name):
        return os.environ[env_name]
    for file in PIP_CONFIGS:
        config = configparser.ConfigParser()
        config.read(file)
        if config.has_option("global", key):
            return config.get("global", key)
    return ""


def host_pip_access() -> tuple[dict[str, str], list[str]]:
    """Build args and volumes that give pip in the build the host's CA bundle and local package indexes."""
    args, volumes = {}, []
    cert = _pip_setting("PIP_CERT", "cert")
    if cert and Path(cert).is_file():  # mounted beside the image's own CA bundle, never over it
        args["PIP_CERT"] = CA_INSIDE
        volumes.append(f"{Path(cert).resolve()}:{CA_INSIDE}:ro")
    for env_name, key in (("PIP_INDEX_URL", "index-url"), ("PIP_EXTRA_INDEX_URL", "extra-index-url"),
                          ("PIP_FIND_LINKS", "find-links")):
        local = []
        for entry in _pip_setting(env_name, key).split():
            path = Path(urlparse(entry).path if entry.startswith("file:") else entry)
            if path.is_absolute() and path.is_dir():  # an index's pages link to ../../files: mount its parent
                local.append(entry)
                volumes.append(f"{path.parent if path.name == 'simple' else path}:"
                               f"{path.parent if path.name == 'simple' else path}:ro")
        if local:
            args[env_name] = " ".join(local)
    return args, sorted(set(volumes))


def build(name: str, base: str | None = None, build_args: dict[str, str] | None = None,
          rebuild: bool = False) -> str:
    """The image `localhost/hidecl-<name>:<digest>`, built unless it exists; returns the tag."""
    if name not in NAMES:
        raise ImageError(f"unknown image '{name}': one of {', '.join(NAMES)}.")
    build_args = dict(build_args or {})
    base = pick_base(base)
    base_id = image_id(base) or base
    tag = f"localhost/hidecl-{name}:{digest(name, {**build_args, 'BASE': base}, base_id)}"
    with locked(name):
        if image_id(tag) and not rebuild:
            print(f"{tag} is up to date", file=sys.stderr)
            return tag
        podman_build(name, tag, base, build_args)
    drop_older(name, tag)
    return tag


def podman_build(name: str, tag: str, base: str, build_args: dict[str, str]) -> None:
    pip_args, volumes = host_pip_access()
    command = ["build", "--network", "host", "--layers", "-f", str(containerfile(name)), "-t", tag,
               "-t", f"localhost/hidecl-{name}:latest"]
    for key, value in {**pip_args, **build_args, "BASE": base}.items():
        command += ["--build-arg", f"{key}={value}"]
    for volume in volumes:
        command += ["-v", volume]
    print(f"building {tag} from {base}", file=sys.stderr)
    podman(*command, str(REPO), quiet=False)


def drop_older(name: str, keep: str) -> None:
    """Remove the image's earlier digests (a tag shared with another image goes alone; layers in use stay)."""
    listed = podman("images", "--format", "{{.Repository}}:{{.Tag}}", f"localhost/hidecl-{name}").stdout.split()
    for old in {t for t in listed if re.fullmatch(rf"localhost/hidecl-{name}:[0-9a-f]{{16}}", t)} - {keep}:
        podman("rmi", old, check=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m deploy.image", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("names", nargs="+", choices=NAMES)
    p.add_argument("--base", help=f"base image (default: {DEFAULT_BASE} if it can be had, else {LOCAL_BASE})")
    p.add_argument("--build-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="passed to podman build (e.g. ACCELERATOR=cuda for the train image)")
    p.add_argument("--rebuild", action="store_true", help="build even when the tag exists")
    args = p.parse_args(argv)
    bad = [a for a in args.build_arg if "=" not in a]
    if bad:
        p.error(f"--build-arg takes KEY=VALUE, got {bad}")
    try:
        for name in args.names:
            print(build(name, args.base, dict(a.split("=", 1) for a in args.build_arg), args.rebuild))
    except (ImageError, subprocess.CalledProcessError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
