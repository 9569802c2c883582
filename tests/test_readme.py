"""The README's Python examples run and print exactly what the README says they print."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
# A ```python block, then "prints" and its output: a ``` block or `inline` code.
EXAMPLE = re.compile(r"```python\n(.*?)```\s*\nprints(?:\s*\n\n```\n(.*?)```|\s+`(.*?)`)", re.S)


def examples() -> list[tuple[str, str]]:
    found = [(m[1], m[2] or m[3]) for m in EXAMPLE.finditer(README.read_text())]
    assert len(found) >= 3, "the README's examples with their printed output were not found"
    return found


@pytest.mark.parametrize("index", range(3))
def test_readme_example_prints_what_the_readme_says(index, tmp_path):
    code, expected = examples()[index]
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.strip() == expected.strip()


def test_readme_your_own_images_runs_end_to_end(tmp_path):
    """The "Your own images" section: its Python block, then its commands in the same folder,
    each printing what the README shows (training times aside)."""
    text = README.read_text()
    section = text[text.index("## Your own images") :]
    section = section[: section.index("\n## ", 1)]
    code, expected = EXAMPLE.search(section).group(1, 2)
    made = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip() == expected.strip()
    console = section[section.index("```console\n") + 11 :]
    console = console[: console.index("```")]
    commands = re.split(r"^\$ ", console, flags=re.M)[1:]
    assert len(commands) == 3
    tinycnn = f"{shlex.quote(sys.executable)} -m tinycnn"
    for block in commands:
        command, _, shown = block.partition("\n")
        result = subprocess.run(
            re.sub(r"^tinycnn ", tinycnn + " ", command), shell=True, capture_output=True,
            text=True, cwd=tmp_path, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        timing = r"\(\d+\.\d s of training\)"
        assert re.sub(timing, "(T)", result.stdout.strip()) == re.sub(timing, "(T)", shown.strip())
