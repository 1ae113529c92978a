"""Every ```python block in README.md and docs/*.md runs.

The blocks of one file are executed in order in one namespace (later blocks
use names from earlier ones), in a temporary working directory. Blocks in
other languages (```bash, ```text, ```diff) are not run.
"""
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^```python[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def python_blocks(path):
    """``(first line number, source)`` of each ```python block of a markdown file."""
    text = path.read_text(encoding="utf-8")
    return [(text.count("\n", 0, m.start(1)) + 1, m.group(1)) for m in FENCE.finditer(text)]


def test_docs_exist():
    names = {p.relative_to(ROOT).as_posix() for p in DOC_FILES if p.exists()}
    assert {"README.md", "docs/quickstart.md", "docs/api.md", "docs/backends.md",
            "docs/benchmarks.md", "docs/tutorial.md", "docs/migration.md",
            "docs/cli.md", "docs/dask.md", "docs/libertem.md"} <= names


def test_fence_parser():
    text = "x\n```python\na = 1\n```\n```bash\nls\n```\n```python\nb = a\n```\n"
    assert [m.group(1) for m in FENCE.finditer(text)] == ["a = 1\n", "b = a\n"]


@pytest.mark.parametrize("path", [p for p in DOC_FILES if p.exists() and python_blocks(p)],
                         ids=lambda p: p.relative_to(ROOT).as_posix())
def test_python_blocks_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for line, source in python_blocks(path):
        # pad with newlines so tracebacks show the line numbers of the markdown file
        code = compile("\n" * (line - 1) + source, str(path), "exec")
        exec(code, namespace)
    # then the `gpucorr ...` command lines of its ```bash blocks, in the same folder
    from gpucorr.cli import main
    for command in gpucorr_commands(path):
        assert main(shlex.split(command)[1:]) == 0, command


BASH = re.compile(r"^```bash[ \t]*\n(.*?)^```[ \t]*$", re.S | re.M)


def gpucorr_commands(path):
    """The lines of ```bash blocks that run the gpucorr command."""
    text = path.read_text(encoding="utf-8")
    return [line.strip() for m in BASH.finditer(text) for line in m.group(1).splitlines()
            if line.strip().startswith("gpucorr ")]


def test_gpucorr_commands_are_found():
    assert "gpucorr refine scan.npy" in " ".join(gpucorr_commands(ROOT / "docs/tutorial.md"))
