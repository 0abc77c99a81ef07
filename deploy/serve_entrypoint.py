"""The serve image's entry point: `python -m serve` with its flags from `HIDECL_*` environment variables.

Every flag of `python -m serve --help` has a variable: `--max-inflight-mb 512` is `HIDECL_MAX_INFLIGHT_MB=512`,
a switch such as `--reuse-port` is `HIDECL_REUSE_PORT=1` (or 0). Arguments given to the container come after
them, so they win. The image sets `HIDECL_BUNDLE=/bundles`; Kubernetes manifests set the rest as `env:`.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys
from collections.abc import Mapping

PREFIX = "HIDECL_"
TRUE, FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}


class EnvError(ValueError):
    """A HIDECL_* variable that names no flag or has a value its flag cannot take."""


def serve_flags() -> tuple[set[str], set[str]]:
    """(every option, the switches among them) as `python -m serve --help` lists them."""
    from serve.__main__ import parse_args

    text = io.StringIO()
    with contextlib.redirect_stdout(text), contextlib.suppress(SystemExit):
        parse_args(["--help"])
    usage = text.getvalue()
    options = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", usage)) - {"--help"}
    switches = set(re.findall(r"\[(--[a-z][a-z0-9-]*)\]", usage))  # `[--reuse-port]`, not `[--port PORT]`
    return options, switches


def flags_from_env(env: Mapping[str, str], options: set[str], switches: set[str]) -> list[str]:
    """`HIDECL_X_Y=v` → `--x-y v` (switches: present when true), in name order; unknown names are errors."""
    args: list[str] = []
    for name in sorted(n for n in env if n.startswith(PREFIX)):
        value = env[name]
        flag = "--" + name[len(PREFIX):].lower().replace("_", "-")
        if flag not in options:
            known = ", ".join(PREFIX + o[2:].upper().replace("-", "_") for o in sorted(options))
            raise EnvError(f"{name} names no flag of `python -m serve` (known: {known}); unset it or fix the name.")
        if flag in switches:
            if value.strip().lower() not in TRUE | FALSE:
                raise EnvError(f"{name}={value!r}: a switch takes 1/true/yes/on or 0/false/no/off.")
            args += [flag] if value.strip().lower() in TRUE else []
        else:
            args += [flag, value]
    return args


def main(argv: list[str] | None = None) -> int:
    options, switches = serve_flags()
    try:
        args = flags_from_env(os.environ, options, switches)
    except EnvError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    from serve.__main__ import main as serve_main

    return serve_main(args + list(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
