"""One command-line dialect for every ``lit-block`` subcommand: the one LightningCLI speaks.

Each of the framework's own subcommands builds its parser with :func:`command_parser`, a
jsonargparse parser (LightningCLI's own library), so all of them take what ``fit`` takes:

    lit-block eval-lm --config my_eval.yaml --max-samples 8     # YAML files (repeatable), options override them
    lit-block eval-lm --print_config > my_eval.yaml             # every option with its value, as YAML

A config file's keys are the options' names with underscores (``--max-samples`` -> ``max_samples``),
as a LightningCLI config's keys are. ``--help`` shows every option with its help and its default.
"""

from __future__ import annotations

import argparse

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter


class HelpFormatter(DefaultHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each option's default (jsonargparse) and keeps module docstrings' line breaks (argparse)."""


CONFIG_HELP = ("a YAML file of this command's options, keys with underscores (repeatable: later files and "
               "options given after it override it; --print_config writes one)")


def command_parser(prog: str, description: str | None = None, **kwargs) -> ArgumentParser:
    """A parser for ``lit-block SUBCOMMAND`` with ``--config`` (and jsonargparse's ``--print_config``).

    A bad option or config key raises jsonargparse's ``ArgumentError`` instead of printing the usage, so the
    command's top level reports it in one line like every other bad input (``lit_block.errors.report``)."""
    parser = ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter, exit_on_error=False,
                            **kwargs)
    parser.add_argument("--config", action=ActionConfigFile, help=CONFIG_HELP)
    return parser


def option_actions(parser: ArgumentParser) -> list[argparse.Action]:
    """The options a user sets (not --help, --config or --print_config), subcommands' included."""
    skip = {"help", "config", "print_config"}
    actions = []
    for action in parser._actions:  # argparse keeps no public list of a parser's actions
        subcommands = getattr(action, "_name_parser_map", None)
        if subcommands:  # jsonargparse's subcommands: each has its own parser
            for sub in subcommands.values():
                actions.extend(option_actions(sub))
        elif action.dest not in skip:
            actions.append(action)
    return actions
