"""``mailgate completion bash|zsh`` and ``mailgate man``: both generated from the parser itself.

``walk(parser)`` yields every command of the tree (``mailgate held list`` …) with its parser
and help line; the manual page, the completion scripts and the tests that hold every
command to the conventions (help on every option, ``--json`` where data is printed, no
traceback on bad input) all read the tree through it, so a new command is covered the
moment it is registered.

Completion comes from shtab, given the tree with file and directory arguments marked so
the shell offers paths there. The manual page is roff (``man 7 man``) written here: name,
synopsis, the global options, every command with its options, the environment, the
settings file search, the exit codes. Install them with::

    mailgate completion bash > /etc/bash_completion.d/mailgate
    mailgate completion zsh > /usr/local/share/zsh/site-functions/_mailgate
    mailgate man > /usr/local/share/man/man1/mailgate.1
"""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from gateway import __version__
from gateway.cli.common import EXIT_CODES, EXIT_OK
from gateway.settings import CONFIG_SEARCH

SHELLS = ("bash", "zsh")

# What the manual says about the environment (the settings variables are generic).
ENVIRONMENT = (
    ("MAILGATE_CONFIG", "the settings file, when --config is not given"),
    ("MAILGATE_<SECTION>_<KEY>", "overrides one key of the settings, e.g. MAILGATE_STORAGE_URL"),
    ("MAILGATE_ADMIN_TOKEN", "the admin API token for mailgate admin"),
    ("MAILGATE_ADMIN_TOKEN_FILE", "a file holding the admin API token"),
    ("MAILGATE_API_URL", "the admin API's base URL (default: from http.listen)"),
    ("MAILGATE_PASSWORD", "the SMTP password for mailgate send-test"),
)

FILES = (
    f"The settings file: {CONFIG_SEARCH}. Its keys are described in mailgate.toml.example; "
    "the policies live in the directory server.policies_dir names, the store and the keys in "
    "server.data_dir."
)
CHECK_CODES = (
    "mailgate check uses its own scale: 0 it would pass, 1 tagged or repaired, 2 held or "
    "refused, 3 usage error."
)

FILES = (
    f"The settings file: {CONFIG_SEARCH}. Its keys are described in mailgate.toml.example; "
    "the policies live in the directory server.policies_dir names, the store and the keys in "
    "server.data_dir."
)
CHECK_CODES = (
    "mailgate check uses its own scale: 0 it would pass, 1 tagged or repaired, 2 held or "
    "refused, 3 usage error."
)

# Argument names that take a path, for the shell to complete file names there.
_PATH_DESTS = {"file", "files", "paths", "directory", "token_file", "policies", "config"}


@dataclass(frozen=True, slots=True)
class Command:
    """One command of the tree: its words after ``mailgate``, its parser, its help line."""

    words: tuple[str, ...]
    parser: argparse.ArgumentParser
    help: str | None
    leaf: bool

    @property
    def name(self) -> str:
        """``mailgate held list``."""
        return " ".join(("mailgate", *self.words))


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction[Any] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def walk(parser: argparse.ArgumentParser, words: tuple[str, ...] = ()) -> Iterator[Command]:
    """Every command below ``parser``, depth first, groups before their subcommands."""
    sub = _subcommands(parser)
    if sub is None:
        return
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    for name, child in sub.choices.items():
        here = (*words, name)
        leaf = _subcommands(child) is None
        yield Command(here, child, helps.get(name), leaf)
        yield from walk(child, here)


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's own arguments, without ``--help`` and the subcommand switch."""
    return [
        a
        for a in parser._actions
        if not isinstance(a, argparse._HelpAction | argparse._SubParsersAction)
        and a.help is not argparse.SUPPRESS
    ]


def takes_path(action: argparse.Action) -> bool:
    """Whether the argument names a file or directory."""
    return action.type is Path or action.dest in _PATH_DESTS


# -- completion --------------------------------------------------------------------------


def completion(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for ``shell`` (bash or zsh)."""
    import shtab

    for command in (None, *walk(parser)):
        target = parser if command is None else command.parser
        for action in options(target):
            if takes_path(action):
                is_dir = action.dest in ("directory", "policies")
                action.complete = shtab.DIRECTORY if is_dir else shtab.FILE  # type: ignore[attr-defined]
    script: str = shtab.complete(parser, shell=shell)
    return script


# -- man page ----------------------------------------------------------------------------


def _roff(text: str) -> str:
    """Text safe in a roff line: backslashes, hyphens of options, leading dots escaped."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return re.sub(r"(?m)^([.'])", r"\\&\1", text)


def _invocation(action: argparse.Action) -> str:
    if not action.option_strings:
        return f"\\fI{_roff(str(action.metavar or action.dest)).upper()}\\fR" + (
            " ..." if action.nargs in ("+", "*") else ""
        )
    flags = ", ".join(f"\\fB{_roff(s)}\\fR" for s in action.option_strings)
    if action.nargs == 0:
        return flags
    if action.choices:
        value = "{" + ",".join(_roff(str(c)) for c in action.choices) + "}"
    else:
        value = _roff(str(action.metavar or action.dest.upper()))
    return f"{flags} \\fI{value}\\fR"


def _option_list(parser: argparse.ArgumentParser) -> list[str]:
    lines: list[str] = []
    for action in options(parser):
        lines += [".TP", _invocation(action), _roff(action.help or "")]
    return lines


def _usage(parser: argparse.ArgumentParser) -> str:
    usage = parser.format_usage().removeprefix("usage: ").strip()
    return _roff(re.sub(r"\s+", " ", usage))


def man_page(parser: argparse.ArgumentParser, today: date | None = None) -> str:
    """The roff source of ``mailgate(1)``."""
    day = (today or date.today()).isoformat()
    lines = [
        f'.TH MAILGATE 1 "{day}" "mailgate {__version__}" "Mailgate manual"',
        ".SH NAME",
        "mailgate \\- " + _roff(parser.description or "outbound deliverability gateway"),
        ".SH SYNOPSIS",
        ".B mailgate",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]",
        ".SH DESCRIPTION",
        _roff(
            "Mailgate takes dealers' CRM mail over SMTP, inspects, signs and spools it, and "
            "relays it upstream. mailgate serve runs the gateway; the other commands set it "
            "up, inspect it and operate it, through its admin API (mailgate admin) or "
            "directly on its store and files."
        ),
        ".SH OPTIONS",
        *_option_list(parser),
        ".SH COMMANDS",
    ]
    for command in walk(parser):
        if not command.leaf:
            continue
        lines += [f'.SS "{_roff(command.name)}"', _roff(command.help or "")]
        description = command.parser.description
        if description and description != command.help:
            lines += [".PP", _roff(description)]
        lines += [".PP", ".nf", _usage(command.parser), ".fi", *_option_list(command.parser)]
    lines.append(".SH ENVIRONMENT")
    for name, text in ENVIRONMENT:
        lines += [".TP", f"\\fB{_roff(name)}\\fR", _roff(text)]
    lines += [
        ".SH FILES",
        _roff(FILES),
        ".SH EXIT STATUS",
    ]
    for code, text in EXIT_CODES:
        lines += [".TP", f"\\fB{code}\\fR", _roff(text)]
    lines += [
        ".PP",
        _roff(CHECK_CODES),
    ]
    return "\n".join(lines) + "\n"


# -- commands ----------------------------------------------------------------------------


def _root(args: argparse.Namespace) -> argparse.ArgumentParser:
    # The whole tree, as ``main`` built it: it hands its parser down as a default
    # (``root_parser``), so this module need not import main, which imports it.
    root: argparse.ArgumentParser = args.root_parser
    return root


def cmd_completion(args: argparse.Namespace) -> int:
    """Print the completion script for a shell."""
    print(completion(_root(args), args.shell), end="")
    return EXIT_OK


def cmd_man(args: argparse.Namespace) -> int:
    """Print the manual page (roff)."""
    print(man_page(_root(args)), end="")
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``completion`` and ``man`` to the ``mailgate`` subcommands."""
    p = subparsers.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print a completion script, e.g. `mailgate completion bash > "
        "/etc/bash_completion.d/mailgate`.",
    )
    p.add_argument("shell", choices=SHELLS, help="the shell to complete for")
    p.set_defaults(func=cmd_completion)
    p = subparsers.add_parser(
        "man",
        help="print the manual page (roff)",
        description="Print mailgate(1), e.g. `mailgate man > mailgate.1 && man -l mailgate.1`.",
    )
    p.set_defaults(func=cmd_man)
