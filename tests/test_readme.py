"""What README.md names exists: its `spade_viz` command lines parse with the real parser, every other
flag it names is one of the CLI's (or belongs to the program its paragraph names), and every
`SPADE_VIZ_*` variable it names is read by the package, the app or the scripts."""

from __future__ import annotations

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from spade_viz.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
FLAG = re.compile(r"(?<![\w-])--[a-zA-Z][\w.-]*")
# flags the README gives to other programs, and the word that names that program in the same paragraph
OTHER_PROGRAMS = {
    "--server.address": "scripts/start.sh",  # passed on to `streamlit run`
    "--server.port": "scripts/start.sh",
    "--tabs": "bench/class_load.py",
    "--reps": "bench/analyze", "--lengths": "bench/analyze",  # analyze.py and analyze_browser.py
    "--standalone": "torchrun", "--nproc-per-node": "torchrun", "--nnodes": "torchrun", "--node-rank": "torchrun",
    "--rdzv-endpoint": "torchrun",
    "--multi_gpu": "accelerate", "--num_processes": "accelerate", "--cpu": "accelerate",
    "--mpirun_hostfile": "accelerate",
}


def code_lines() -> list[str]:
    """The lines of README's shell code blocks, `\\` continuations joined, comments dropped."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            lines.append(line.split(" #")[0].strip())
    return lines


def spade_viz_commands() -> list[list[str]]:
    """The arguments of every `python -m spade_viz ...` / `spade-viz ...` line in a code block."""
    commands = []
    for line in code_lines():
        found = re.search(r"(?:-m spade_viz|^spade-viz)\s+(.*)$", line)
        if found:
            commands.append(shlex.split(found.group(1)))
    return commands


def cli_flags() -> set[str]:
    """Every option string of every subcommand (and of the top-level parser)."""
    parser = build_parser()
    flags = set(parser._option_string_actions)
    for action in parser._subparsers._group_actions:
        for sub in action.choices.values():
            flags |= set(sub._option_string_actions)
    return {flag for flag in flags if flag.startswith("--")}


def test_readme_command_lines_parse():
    commands = spade_viz_commands()
    assert len(commands) >= 15, commands  # the README's examples were found
    names = {args[0] for args in commands if args and not args[0].startswith("-")}
    assert {"analyze", "sweep", "exit-curve", "real-exit", "calibrate"} <= names
    for args in commands:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                build_parser().parse_args(args)
            except SystemExit as stop:  # --help exits 0 after printing; anything else is a bad line
                assert stop.code == 0 and args == ["--help"], (args, err.getvalue())


def test_every_flag_the_readme_names_exists():
    known = cli_flags()
    paragraphs = re.split(r"\n\s*\n", README)
    unknown = []
    for paragraph in paragraphs:
        for flag in set(FLAG.findall(paragraph)):
            program = OTHER_PROGRAMS.get(flag)
            if flag in known or (program and program in paragraph):
                continue
            unknown.append((flag, paragraph[:80]))
    assert not unknown, unknown
    # the model options are exactly on the commands the Command line section says
    parser = build_parser()
    commands = next(a for a in parser._subparsers._group_actions).choices
    with_model = {name for name, sub in commands.items() if "--max-memory" in sub._option_string_actions}
    assert with_model == {"analyze", "sweep", "calibrate", "real-exit"}
    assert "`analyze`, `sweep`, `calibrate` and `real-exit` take `--model`" in README
    assert set(commands["fetch"]._option_string_actions) == {"-h", "--help"}


def _sources() -> dict[Path, str]:
    files = [*ROOT.glob("spade_viz/**/*.py"), ROOT / "app.py", *ROOT.glob("pages/*.py"), *ROOT.glob("scripts/*"),
             ROOT / "tests" / "browser.py"]
    return {path: path.read_text(encoding="utf-8") for path in files if path.is_file()}


@pytest.mark.parametrize("variable", sorted(set(re.findall(r"SPADE_VIZ_[A-Z0-9_]+", README))))
def test_every_variable_the_readme_names_is_read(variable):
    """Read, not merely mentioned: a string literal in Python, or used or set in a shell script."""
    python = re.compile(rf"""["']{variable}["']""")
    shell = re.compile(rf"^(?!\s*#).*(\${{?{variable}\b|\b{variable}=|export .*\b{variable}\b)", re.M)
    readers = [path.relative_to(ROOT) for path, text in _sources().items()
               if (python if path.suffix == ".py" else shell).search(text)]
    assert readers, f"{variable} is named in README.md but nothing reads it"
