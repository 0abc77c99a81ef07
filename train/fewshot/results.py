"""The study's results: every backbone evaluated on the same episodes, side by side, in `results.json` and as a
markdown table (`python -m train.fewshot.results OUTPUT_DIR` prints it again)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

from ..config import FEW_SHOT_BACKBONES, FewShotRunConfig
from ..report import RunLog, write_results
from . import records
from .summary import paired_difference

UPSTREAM_KEYS = ("final_average_accuracy", "cumulative_average_accuracy", "final_forgetting", "train_seconds")


def _settings(config: FewShotRunConfig) -> dict:
    return json.loads(json.dumps(records.episode_settings(config.fewshot)))


def comparable_summaries(config: FewShotRunConfig) -> dict[str, dict]:
    """The backbones evaluated in the output folder on exactly these episodes (settings and seed)."""
    settings = _settings(config)
    found = records.load_summaries(config.run.output_dir)
    return {kind: found[kind] for kind in FEW_SHOT_BACKBONES
            if kind in found and found[kind]["settings"] == settings and found[kind]["seed"] == config.run.seed}


def _upstream(config: FewShotRunConfig) -> dict:
    folders = {"vanilla": config.fewshot.vanilla_model_output_dir, "shared": config.fewshot.shared_model_output_dir}
    out = {}
    for stage, folder in folders.items():
        path = Path(folder) / "results.json"
        if path.is_file():
            data = json.loads(path.read_text())
            out[stage] = {"output_dir": folder, **{k: data[k] for k in UPSTREAM_KEYS if k in data}}
    return out


def study_results(config: FewShotRunConfig) -> dict:
    backbones = comparable_summaries(config)
    paired = {}
    if "vanilla" in backbones:
        paired = {f"{kind} - vanilla": paired_difference(backbones["vanilla"]["accuracies"], s["accuracies"])
                  for kind, s in backbones.items() if kind != "vanilla"}
    return {"preset": config.run.preset, "seed": config.run.seed, "few_shot": _settings(config),
            "backbones": {k: {n: v for n, v in s.items() if n not in ("settings", "seed")}
                          for k, s in backbones.items()},
            "paired_differences": paired, "upstream": _upstream(config), "config": config.to_dict()}


def markdown_table(results: dict) -> str:
    lines = ["| backbone | episodes | mean accuracy % | std | 95% CI of the mean (t) | reference \"95% CI\" "
             "(1.96·std, not a CI) | LoRA slot (episodes) |", "|---|---|---|---|---|---|---|"]
    for kind, s in results["backbones"].items():
        slots = Counter(s["lora_slots"])
        used = "—" if None in slots else ", ".join(f"{slot} ({n})" for slot, n in sorted(slots.items()))
        lines.append(f"| {kind} | {s['episodes']} | {s['accuracy_mean']:.2f} | {s['accuracy_std']:.2f} | "
                     f"{s['ci95'][0]:.2f} – {s['ci95'][1]:.2f} (± {s['ci95_half_width']:.2f}) | "
                     f"± {s['reference_1_96_std']:.2f} | {used} |")
    for name, d in results["paired_differences"].items():
        lines.append(f"| {name} (paired) | {d['episodes']} | {d['difference_mean']:+.2f} | {d['difference_std']:.2f} | "
                     f"{d['ci95'][0]:+.2f} – {d['ci95'][1]:+.2f} | | |")
    return "\n".join(lines)


def write_study_results(config: FewShotRunConfig, log: RunLog) -> dict:
    results = study_results(config)
    path = write_results(config.run.output_dir, results)
    f = results["few_shot"]
    log.event("finish", f"{f['num_ways']}-way {f['num_shots']}-shot, {f['num_episodes']} episodes, seed "
              f"{results['seed']}:\n{markdown_table(results)}\n→ {path}")
    return results


def main(argv: list[str]) -> int:
    for folder in argv:
        print(markdown_table(json.loads((Path(folder) / "results.json").read_text())))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
