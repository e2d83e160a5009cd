"""The README's two set-up commands are the contract: CI runs the second one."""

from __future__ import annotations

import re
import subprocess

from conftest import REPO


def _bash_blocks() -> list[str]:
    return re.findall(r"^```bash\n(.*?)\n```$", (REPO / "README.md").read_text(), flags=re.S | re.M)


def test_readme_starts_with_two_commands():
    blocks = _bash_blocks()
    assert len(blocks) >= 2
    main_job, tests = blocks[0], blocks[1]
    assert "-c constraints.txt" in main_job and "edgeopt convert models/" in main_job
    assert "-c constraints.txt" in tests and "pytest" in tests and "'.[test]'" in tests
    # Both come before any other section of the README.
    text = (REPO / "README.md").read_text()
    assert text.index(tests) < text.index("\n## ")


def test_ci_runs_exactly_the_readme_test_command():
    ci = (REPO / ".ci" / "run").read_text()
    extracted = subprocess.run(
        ["bash", "-c", re.search(r"^test_command=\$\((.*)\)$", ci, flags=re.M).group(1)],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout.strip()
    assert extracted == _bash_blocks()[1]
    assert 'bash -c "set -euo pipefail; $test_command"' in ci


def test_constraints_pin_cpu_torch():
    lines = [ln.strip() for ln in (REPO / "constraints.txt").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert "torch==2.13.0" in lines
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "torch==" not in pyproject  # the library itself does not hard-pin torch


def test_the_python_example_runs(tmp_path, monkeypatch):
    """The README's "From Python" block, run as written (from the repository's folder, outputs redirected)."""
    import re

    text = (REPO / "README.md").read_text()
    section = text[text.index("### From Python"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    code = code.replace('"out/py"', repr(str(tmp_path / "out"))).replace('".edgeopt-cache"',
                                                                        repr(str(tmp_path / "cache")))
    code = code.replace("Events(print)", "Events(seen.append)")
    monkeypatch.chdir(REPO)
    seen: list = []
    namespace = {"seen": seen}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README's example
    assert namespace["result"].report.summary.quantization.shipped == "int8"
    assert any(event.kind == "started" and event.source == "quantize" for event in seen)
    assert (tmp_path / "out" / "model.onnx").is_file() and any((tmp_path / "cache").iterdir())


def test_every_section_heading_appears_once():
    """Benchmark sections are replaced by scripts; a replacement that pasted a stale copy beside the new one
    left two "int8 on real published models" sections with different numbers (found in session 25)."""
    headings = re.findall(r"^#{2,4} .+$", (REPO / "README.md").read_text(), flags=re.M)
    repeated = sorted({h for h in headings if headings.count(h) > 1})
    assert not repeated, repeated
