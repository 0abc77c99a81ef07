"""`python -m export.report VERSION_DIR...`: a markdown table of bundle versions' parity, accuracy and variants."""

from __future__ import annotations

import sys

from .manifest import Manifest, load_manifest
from .variants import VARIANTS

HEADER = ("| method | tasks | router agreement | class agreement | max abs Δlogit (router) | fp32 accuracy, images/s | "
          + " | ".join(f"{name}: accuracy (agreement), images/s" for name in VARIANTS) + " |")


def variant_cell(manifest: Manifest, name: str) -> str:
    for variant in manifest.variants:
        if variant.name == name:
            m = variant.measurement
            return f"{m.accuracy:.2f}% ({100 * variant.class_agreement:.1f}%), {m.images_per_second:.0f}"
    reason = manifest.rejected_variants.get(name)
    return "not tried" if reason is None else "not published: " + reason.split(" (need")[0]


def row(manifest: Manifest) -> str:
    p, m = manifest.parity, manifest.measurement
    route = "—" if p.router_task_agreement is None else f"{100 * p.router_task_agreement:.0f}%"
    router_diff = "—" if p.router_max_abs_logit_diff is None else f"{p.router_max_abs_logit_diff:.1e}"
    cells = [manifest.method, str(manifest.tasks_learned), route, f"{100 * p.class_agreement:.0f}%",
             f"{p.max_abs_logit_diff:.1e} ({router_diff})", f"{m.accuracy:.2f}%, {m.images_per_second:.0f}"]
    return "| " + " | ".join(cells + [variant_cell(manifest, name) for name in VARIANTS]) + " |"


def table(folders: list[str]) -> str:
    manifests = [load_manifest(folder) for folder in folders]
    return "\n".join([HEADER, "|" + "---|" * (6 + len(VARIANTS))] + [row(m) for m in manifests])


if __name__ == "__main__":
    print(table(sys.argv[1:]))
