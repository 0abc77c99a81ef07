"""Method-scoped config sections: configs recorded in the layout before them (`prompt.size`, `prompt.reg`,
`prompt.batchwise_prompt`) load with the same meaning, old override keys still work, the reference flags are
unchanged, and a run whose checkpoints hold the old layout loads and learns on exactly as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.helpers.runs import FAST, REPO, child_env, results, run_main
from train.cli import parse_invocation
from train.config import MOVED_KEYS, RunConfig
from train.presets import preset

# RunConfig.to_dict() of presets as the code before the sections wrote it (into checkpoints and results).
BEFORE = Path(__file__).parent / "data" / "run_configs_before_scoping"
FIXTURES = sorted(BEFORE.glob("*.json"))
SWITCHES = ["--batchwise_prompt", "true", "--reg", "0.3", "--size", "7", "--kv_reshape_official", "true",
            "prompt.top_k=2", "--lora_momentum", "0.2"]  # how digits_hideprompt_switches.json was written


def flat(tree: dict, prefix: str = "") -> dict[str, object]:
    """{'a.b': leaf} of a nested dict, lists as tuples (as the config holds them)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = tuple(value) if isinstance(value, list) else value
    return out


def old_layout(config: dict) -> dict:
    """A config dict of today's layout written back in the layout before the sections (MOVED_KEYS reversed)."""
    config = json.loads(json.dumps(config))
    for old, new in MOVED_KEYS.items():
        (old_section, old_name), (new_section, new_name) = old.split("."), new.split(".")
        config[old_section][old_name] = config[new_section].pop(new_name)
    return {k: v for k, v in config.items() if v != {}}


def test_the_fixtures_are_in_the_layout_before_the_sections():
    assert len(FIXTURES) >= 4
    for path in FIXTURES:
        before = flat(json.loads(path.read_text()))
        assert set(MOVED_KEYS) <= set(before) and not {k for k in before if k.startswith(("adapter.", "hide."))}


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_a_recorded_config_loads_with_every_value_in_its_new_place(path):
    before = flat(json.loads(path.read_text()))
    loaded = RunConfig.from_dict(json.loads(path.read_text()))
    now = flat(loaded.to_dict())
    for key, value in before.items():
        assert now[MOVED_KEYS.get(key, key)] == value, key
    # keys added since the fixtures were written hold their defaults
    defaults = flat(RunConfig().to_dict())
    placed = {MOVED_KEYS.get(k, k) for k in before}
    assert {k: v for k, v in now.items() if k not in placed} == {k: defaults[k] for k in now if k not in placed}


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_presets_and_flags_give_what_they_gave_before(path):
    if path.stem.endswith("_switches"):
        expected = parse_invocation(["digits_hideprompt", *SWITCHES]).config
    else:
        expected = preset(path.stem)
    assert RunConfig.from_dict(json.loads(path.read_text())) == expected


def test_the_new_layout_round_trips_and_a_given_new_key_wins():
    config = parse_invocation(["digits_hidelora", *SWITCHES]).config
    assert RunConfig.from_dict(config.to_dict()) == config
    both = {**old_layout(config.to_dict()), "hide": {"contrastive_reg": 0.5}}
    assert RunConfig.from_dict(both).hide.contrastive_reg == 0.5


def test_reference_flags_set_the_sections_fields():
    config = parse_invocation(["digits_hidelora", "--size", "7", "--reg", "0.3", "--batchwise_prompt", "True"]).config
    assert (config.adapter.slots, config.hide.contrastive_reg, config.adapter.batchwise_selection) == (7, 0.3, True)


@pytest.mark.parametrize("old, new, value", [
    ("prompt.size", "adapter.slots", "7"),
    ("prompt.reg", "hide.contrastive_reg", "0"),
    ("prompt.batchwise_prompt", "adapter.batchwise_selection", "true"),
])
def test_an_old_override_key_works_with_a_one_line_notice(old, new, value, capsys):
    assert parse_invocation(["digits_hideprompt", f"{old}={value}"]).config == \
        parse_invocation(["digits_hideprompt", f"{new}={value}"]).config
    notices = capsys.readouterr().err.splitlines()
    assert len(notices) == 1 and old in notices[0] and new in notices[0]


def test_dry_run_prints_the_sections(capsys):
    from train.main import main

    assert main(["digits_hidelora", "--size", "6", "--dry-run"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["adapter"]["slots"] == 6 and printed["hide"]["contrastive_reg"] == 0.1
    assert not {"size", "reg", "batchwise_prompt"} & set(printed["prompt"])


def test_a_run_recorded_in_the_old_layout_loads_and_learns_on_as_before(tmp_path, random_backbone):
    """One task of HiDe-Prompt (non-default slots, reg and batch vote); a copy of the run with every recorded
    config rewritten to the old layout loads to the same method and learns its next task bit for bit alike."""
    import subprocess
    import sys

    import torch

    from train.trained import load_trained

    new, old = tmp_path / "new", tmp_path / "old"
    done = run_main(["digits_hideprompt", "--output_dir", str(new), f"backbone.checkpoint={random_backbone}",
                     "--until_task", "1", "--size", "6", "--reg", "0.2", "--batchwise_prompt", "true", *FAST])
    assert done.returncode == 0, done.stderr[-3000:]
    shutil.copytree(new, old)
    before = flat(json.loads((BEFORE / "digits_hideprompt.json").read_text()))
    for state_file in old.rglob("state.json"):
        state = json.loads(state_file.read_text())
        state["config"] = old_layout(state["config"])
        assert set(before) <= set(flat(state["config"]))  # what the code before the sections wrote, at least
        state_file.write_text(json.dumps(state, indent=1))

    a, b = load_trained(new, 0), load_trained(old, 0)
    assert a.config == b.config and b.config.adapter.slots == 6 and b.config.hide.contrastive_reg == 0.2
    for (name, x), (_, y) in zip(a.method.state_dict().items(), b.method.state_dict().items()):
        assert torch.equal(x, y), name

    for run in (new, old):  # the next task from the recorded config (next_task.py reads it, overrides nothing)
        learned = subprocess.run([sys.executable, "train/next_task.py", str(run)], cwd=REPO, env=child_env(),
                                 capture_output=True, text=True, timeout=600)
        assert learned.returncode == 0, learned.stderr[-3000:]
    assert results(new)["accuracy_matrix"] == results(old)["accuracy_matrix"]
    assert json.loads((old / "checkpoints/task2/state.json").read_text())["config"]["adapter"]["slots"] == 6
    x, y = (load_file(str(run / "checkpoints/task2/learned.safetensors")) for run in (new, old))
    assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)
