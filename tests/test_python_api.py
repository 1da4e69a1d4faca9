"""docs/python-api.md: its Python blocks run in order, in one namespace, as one test."""

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"


def blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", DOC.read_text(), flags=re.S | re.M)


def test_python_api_page_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                   # the page writes net.darb and a .pt file
    namespace = {"__name__": "python_api_page"}
    code = blocks()
    assert len(code) >= 8
    for i, block in enumerate(code):
        exec(compile(block, f"{DOC.name} block {i + 1}", "exec"), namespace)
    assert (tmp_path / "net.darb").exists()
