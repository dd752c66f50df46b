"""docs/READING.md and the README's Layout section point at code that exists.

The guide names files (`npad/tensor.py`), definitions (`npad/functional/conv.py::conv2d`) and methods
(`npad/tensor.py::Tensor.backward`) in backticks, some followed by a rough size "(~N lines)". Each file
must exist, each name must be defined in its file (def, class or assignment; a method or class
attribute for Class.name), each stated size must be within a factor of 1.5 of the real one, and each
op class of npad/functional/ it names must fit the screen bound the guide states. The README's Layout
block must name existing paths, every public module and package of npad/, and the guide.
"""
import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "READING.md"
README = ROOT / "README.md"
TOLERANCE = 1.5

# `path` or `path::Name.attr`, path under one of the repository's folders
REF = re.compile(r"`((?:npad|examples|tests|benchmarks|docs|weights|tools)/[\w./-]*)(?:::([\w.]+))?`")
SIZE = re.compile(r"\s*\(~(\d+) lines")


def references(text):
    """[(path, name or None, stated lines or None)] in the order they appear."""
    out = []
    for m in REF.finditer(text):
        size = SIZE.match(text, m.end())
        out.append((m.group(1), m.group(2), int(size.group(1)) if size else None))
    return out


@lru_cache(maxsize=None)
def _tree(path):
    return ast.parse((ROOT / path).read_text(encoding="utf-8"), filename=path)


def _defined(body, name):
    """The def/class/assignment node named ``name`` in a statement list, else None."""
    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return node
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for t in targets:
            names = t.elts if isinstance(t, ast.Tuple) else [t]
            if any(isinstance(n, ast.Name) and n.id == name for n in names):
                return node
    return None


def resolve(path, name):
    """The AST node of ``path::name`` (``name`` may be ``Class.attr``), or None."""
    node = None
    body = _tree(path).body
    for part in name.split("."):
        node = _defined(body, part)
        if node is None:
            return None
        body = getattr(node, "body", [])
    return node


def actual_lines(path, name):
    if name is None:
        return len((ROOT / path).read_text(encoding="utf-8").splitlines())
    node = resolve(path, name)
    return node.end_lineno - node.lineno + 1


def is_function_class(node):
    return isinstance(node, ast.ClassDef) and any(
        (isinstance(b, ast.Name) and b.id == "Function") or (isinstance(b, ast.Attribute) and b.attr == "Function")
        for b in node.bases)


GUIDE_TEXT = GUIDE.read_text(encoding="utf-8")
REFS = references(GUIDE_TEXT)


def test_the_parser_finds_what_the_guide_names():
    """Guards the test itself: a regex that matched nothing would pass everything below."""
    assert len(REFS) > 150
    assert ("npad/functional/conv.py", "Conv2d", 50) in REFS
    assert ("npad/tensor.py", "Tensor.backward", 50) in REFS
    assert references("`npad/a.py::B.c` (~7 lines) and `npad/d/`") == [("npad/a.py", "B.c", 7), ("npad/d/", None, None)]


@pytest.mark.parametrize("path", sorted({p for p, _, _ in REFS}))
def test_referenced_paths_exist(path):
    target = ROOT / path
    assert target.is_dir() if path.endswith("/") else target.is_file(), f"docs/READING.md: {path} does not exist"


@pytest.mark.parametrize("path,name", sorted({(p, n) for p, n, _ in REFS if n}))
def test_referenced_names_are_defined(path, name):
    assert path.endswith(".py"), f"docs/READING.md: {path}::{name} names a definition in a non-Python file"
    assert resolve(path, name) is not None, f"docs/READING.md: {path} defines no {name}"


@pytest.mark.parametrize("path,name,stated", sorted({r for r in REFS if r[2] is not None}, key=str))
def test_stated_sizes_are_roughly_right(path, name, stated):
    n = actual_lines(path, name)
    where = path + (f"::{name}" if name else "")
    assert stated / TOLERANCE <= n <= stated * TOLERANCE, f"docs/READING.md says {where} is ~{stated} lines; it is {n}"


def test_named_reference_ops_fit_one_screen():
    bound = int(re.search(r"One\s+screen:\s+at\s+most\s+(\d+)\s+lines", GUIDE_TEXT).group(1))
    ops = sorted({(p, n) for p, n, _ in REFS if n and p.startswith("npad/functional/")
                  and is_function_class(resolve(p, n))})
    assert len(ops) >= 15, ops                     # the guide names the reference ops it promises
    long = [f"{p}::{n} ({actual_lines(p, n)} lines)" for p, n in ops if actual_lines(p, n) > bound]
    assert not long, f"reference ops longer than one screen ({bound} lines): {long}"


def test_the_tolerance_in_the_guide_is_the_tested_one():
    assert f"within a factor of {TOLERANCE:g} " in " ".join(GUIDE_TEXT.split())


# ---- README: Layout ----------------------------------------------------------------------------
def layout_block():
    section = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", README.read_text(encoding="utf-8"), re.S | re.M)
    assert section, "README.md has no '## Layout' section"
    return section.group(1)


def test_readme_layout_paths_exist_and_cover_the_package():
    block = layout_block()
    assert "docs/READING.md" in block
    paths = re.findall(r"(?<![\w/.])((?:npad|weights|examples|benchmarks|tests|docs|tools)(?:/[\w.-]+)*/?)", block)
    assert len(paths) > 15
    for p in paths:
        assert (ROOT / p).exists(), f"README.md Layout: {p} does not exist"
    public = [e for e in (ROOT / "npad").iterdir() if not e.name.startswith(("_", ".")) and
              (e.suffix == ".py" or (e.is_dir() and (e / "__init__.py").exists()))]
    missing = [e.name for e in public if not any(p == f"npad/{e.name}" or p.startswith(f"npad/{e.name}/")
                                                 for p in paths)]
    assert not missing, f"README.md Layout does not mention npad/{missing}"
