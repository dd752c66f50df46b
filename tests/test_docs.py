"""The examples in the package docstring and the README's library snippet run as written."""
import doctest
import re
from pathlib import Path

import npad

README = Path(__file__).resolve().parents[1] / "README.md"


def test_package_docstring_examples():
    result = doctest.testmod(npad, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 8 and result.failed == 0


def test_readme_library_snippet_runs():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    snippet = next(b for b in blocks if "opt.zero_grad()" in b)
    exec(compile(snippet, "README.md", "exec"), {})
