"""One dialect for every subcommand: --config YAML files, help and a default on every option, one name per thing."""

from __future__ import annotations

import importlib

import pytest
import yaml

from lit_block.benchmarks import BENCHES
from lit_block.cli import FRAMEWORK_SUBCOMMANDS, main
from lit_block.command_line import option_actions

PARSERS = {**{name: module for name, (_, module) in FRAMEWORK_SUBCOMMANDS.items() if name != "bench"},
           **{f"bench {name}": module for name, module in BENCHES.items()}}
REQUIRED = {"segment": ["doc.txt"], "sweep": ["spec.yaml"], "compare": ["--experiment", "sweeps"]}  # given on the line
# names that would mean the same thing as another option somewhere: only the first of each group may exist
SYNONYMS = [("--batch-size", "--batch"), ("--tokens", "--lengths"), ("--split", "--splits"),
            ("--max-samples", "--num-samples", "--samples"), ("--output", "--out", "--output-dir"),
            ("--experiment", "--mlflow-experiment"), ("--checkpoint", "--ckpt")]


def parser(name):
    return importlib.import_module(PARSERS[name]).build_parser()


@pytest.mark.parametrize("name", PARSERS)
def test_every_option_has_help_and_the_parser_takes_config_files(name):
    p = parser(name)
    assert any(a.dest == "config" for a in p._actions), f"{name}: no --config"
    for action in option_actions(p):
        assert action.help and action.help.strip(), f"lit-block {name} {action.option_strings or action.dest}: no help"


@pytest.mark.parametrize("name", [n for n in PARSERS if n != "data"])
def test_print_config_round_trips_through_config(name, tmp_path, capsys):
    """--print_config writes a YAML that --config reads back to the same values (every default included)."""
    p = parser(name)
    with pytest.raises(SystemExit):
        p.parse_args([*REQUIRED.get(name, []), "--print_config"])
    printed = yaml.safe_load(capsys.readouterr().out)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(printed))
    again = p.parse_args(["--config", str(tmp_path / "c.yaml")])
    assert {k: v for k, v in vars(again).items() if k not in ("config", "__default_config__")} == printed


def test_a_config_file_sets_options_and_the_line_overrides_it(tmp_path):
    (tmp_path / "eval.yaml").write_text("max_samples: 5\nsplit: validation\nmodels: [a=b]\n")
    p = parser("eval-lm")
    args = p.parse_args(["--config", str(tmp_path / "eval.yaml"), "--max-samples", "7"])
    assert (args.max_samples, args.split, args.models) == (7, "validation", ["a=b"])
    args = p.parse_args(["--max-samples", "7", "--config", str(tmp_path / "eval.yaml")])  # later wins, as in fit
    assert args.max_samples == 5


def test_the_same_thing_has_the_same_name_everywhere():
    options = {name: {s for a in option_actions(parser(name)) for s in a.option_strings} for name in PARSERS}
    every = set().union(*options.values())
    for canonical, *others in SYNONYMS:
        assert not every & set(others), f"use {canonical}, not {sorted(every & set(others))}: " + ", ".join(
            n for n, opts in options.items() if opts & set(others))
    for name in PARSERS:  # splits are the corpus's names wherever a split is chosen
        for action in option_actions(parser(name)):
            if "--split" in action.option_strings:
                assert set(action.choices) <= {"train", "validation", "test"}, name
    assert all(s == s.lower() and "_" not in s for s in every if s.startswith("--")), "options are --kebab-case"


def test_bad_options_and_config_keys_are_one_line_errors(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("max_sampels: 5\n")
    assert main(["eval-lm", "--config", str(tmp_path / "bad.yaml")]) == 2
    assert main(["eval-lm", "--split", "val"]) == 2
    assert main(["bench", "nope"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert len(err) == 3 and all(line.startswith("lit-block ") for line in err), err
    assert "max_sampels" in err[0] and "'val'" in err[1] and "validation" in err[1] and "'nope'" in err[2]


def test_help_exits_zero_for_every_subcommand(capsys):
    for name in PARSERS:
        assert main([*name.split(), "--help"]) == 0, name
        assert "--config" in capsys.readouterr().out, name
