"""The README's Python examples run and print exactly what the README says they print."""

from __future__ import annotations

import re
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
