"""The repository documents itself: docs name every command option, links resolve, nothing points outside."""

import re
import subprocess
from pathlib import Path

import click
import pytest
from fm4npp_cli.data import main as data_main
from fm4npp_cli.main import main as models_main

ROOT = Path(__file__).parents[1]
#: Names of files that are not in the repository (the project's private design notes) and must not be cited.
OUTSIDE = re.compile(
    r"DESIGN\.md|\.\./shared|shared/reference|sphenix-formats\.md|tpc-physics\.md|"
    r"published-fm4npp-code\.md|fm4npp-paper\.txt"
)


def _tracked(*suffixes: str) -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [ROOT / n for n in names if n.endswith(suffixes) and (ROOT / n).is_file()]


def test_nothing_points_outside_the_repository():
    offenders = []
    for path in _tracked(".py", ".md", ".toml", ".txt", ".cfg", "Makefile", ".yaml", ".yml"):
        if path.name == "test_docs.py":
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert offenders == []


def test_relative_links_in_the_docs_resolve():
    broken = []
    for path in _tracked(".md"):
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert broken == []


@pytest.mark.parametrize(("tool", "group"), [("fm4npp-data", data_main), ("fm4npp", models_main)])
def test_every_option_of_every_command_is_documented(tool, group):
    text = (ROOT / "docs" / "commands.md").read_text()
    missing = []
    for name, command in group.commands.items():
        if f"## {tool} {name}\n" not in text:
            missing.append(f"section of {name}")
        section = text.split(f"## {tool} {name}\n", 1)[-1].split("\n## ", 1)[0]
        for param in command.params:
            if isinstance(param, click.Option):
                flag = max(param.opts, key=len)
                if flag != "--help" and f"`{flag}" not in section:
                    missing.append(f"{name} {flag}")
    assert missing == []
