"""What runs differently off Linux, checked here on Linux: headdb's text files are UTF-8 on
every system (Windows opens a text file in the locale's encoding, cp1252 or another, where no
encoding is given)."""

from __future__ import annotations

import ast
from pathlib import Path

import headdb

SOURCE = Path(headdb.__file__).parent


def _text_opens_without_encoding(tree: ast.AST) -> list[int]:
    """Lines of ``open(...)``, ``PATH.open(...)``, ``read_text()``, ``write_text()`` and
    ``TextIOWrapper(...)`` calls in text mode that give no ``encoding=``."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id == "open":
            mode_at = 1  # open(file, mode)
        elif isinstance(func, ast.Attribute) and func.attr == "open" and not (
                isinstance(func.value, ast.Name) and func.value.id == "os"):  # os.open: a descriptor, no text
            mode_at = 0  # Path.open(mode)
        elif isinstance(func, ast.Attribute) and func.attr in ("read_text", "write_text", "TextIOWrapper"):
            mode_at = None
        else:
            continue
        if any(k.arg == "encoding" for k in node.keywords):
            continue
        mode = node.args[mode_at] if mode_at is not None and len(node.args) > mode_at else next(
            (k.value for k in node.keywords if k.arg == "mode"), None)
        if isinstance(mode, ast.Constant) and isinstance(mode.value, str) and "b" in mode.value:
            continue  # bytes
        lines.append(node.lineno)
    return lines


def test_every_text_file_headdb_opens_names_its_encoding():
    found = {}
    for path in sorted(SOURCE.rglob("*.py")):
        lines = _text_opens_without_encoding(ast.parse(path.read_text(encoding="utf-8")))
        if lines:
            found[str(path.relative_to(SOURCE))] = lines
    assert found == {}, f"text opened in the locale's encoding (cp1252 on Windows); give encoding=\"utf-8\": {found}"


def test_the_check_finds_an_open_without_an_encoding():
    code = ('open(p)\nopen(p, "w")\np.open()\np.read_text()\np.write_text(t)\nio.TextIOWrapper(b)\n'
            'open(p, "rb")\np.open("wb")\nos.open(p, 1)\nopen(p, encoding="utf-8")\np.read_text(encoding="utf-8")\n')
    assert _text_opens_without_encoding(ast.parse(code)) == [1, 2, 3, 4, 5, 6]
