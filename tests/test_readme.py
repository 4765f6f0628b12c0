"""The README's Python examples marked ``<!-- executed by tests/test_readme.py -->`` run."""

import os
import re

import pytest

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "README.md")
MARK = "<!-- executed by tests/test_readme.py -->\n```python\n"


def _blocks():
    text = open(README, encoding="utf-8").read()
    return [m.group(1) for m in re.finditer(re.escape(MARK) + r"(.*?)\n```", text, re.S)]


def test_the_readme_has_executed_examples():
    assert len(_blocks()) >= 2


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(_blocks())))
def test_readme_example_runs(index, capsys):
    exec(compile(_blocks()[index], f"README.md example {index + 1}", "exec"), {})
    if "analyze_model(MyNet()" in _blocks()[index]:
        out = capsys.readouterr().out
        # conv 3x3x1x32 + 32, pointwise 32x8 + 8, dense 14*14*8 x 10 + 10
        assert out.splitlines()[0] == str(320 + 264 + 15_690)
        assert "Conv_3: conv2d(32, 1, padding=same)" in out and "407,314" in out
