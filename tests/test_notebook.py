"""experiments/colab_tpu.ipynb: executed headless on CPU (nbclient + ipykernel) in smoke
mode with 8 forced host devices, as CI runs it; and its static contract (one notebook
under experiments/, committed without outputs, the README badge, no Colab paths)."""

import json
import pathlib
import re
import subprocess
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOK = ROOT / "experiments" / "colab_tpu.ipynb"
MNIST_DIR = ROOT.parent / "shared" / "data" / "mnist"
BADGE = re.compile(r"\(https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/main/"
                   r"experiments/colab_tpu\.ipynb\)")


def _notebook():
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(str(NOTEBOOK), as_version=4)


def _source(nb, cell_type="code"):
    return "\n".join(c.source for c in nb.cells if c.cell_type == cell_type)


def test_one_clean_notebook_with_the_readme_badge():
    assert sorted(p.name for p in (ROOT / "experiments").rglob("*.ipynb")) == \
        ["colab_tpu.ipynb"]
    nb = _notebook()
    pytest.importorskip("nbformat").validate(nb)
    for cell in nb.cells:  # committed without outputs: a diff shows only code changes
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    code = _source(nb)
    assert "/content" not in code  # results go to a temporary directory or runs/colab
    # The install runs only on Colab and never in smoke mode.
    assert "if IN_COLAB and not SMOKE:" in code and "pip" in code
    # A thin client: the library runs the experiments, the notebook only shows them.
    for call in ("experiment.run(", "train.TrainConfig(", "data.load(", "explain(",
                 "train.count_compilations("):
        assert call in code, call
    assert "jax.jit" not in code and "value_and_grad" not in code
    readme = (ROOT / "README.md").read_text()
    repos = {BADGE.search(readme).group(1), BADGE.search(_source(nb, "markdown")).group(1)}
    assert len(repos) == 1, repos
    assert f'"https://github.com/{repos.pop()}"' in code  # REPO_URL: the badge's repository


@pytest.mark.slow
@pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no MNIST at {MNIST_DIR}")
def test_the_notebook_runs_top_to_bottom_on_eight_cpu_devices(tmp_path, monkeypatch):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from nbclient import NotebookClient
    nb = _notebook()
    for key, value in {"CONVJAX_NOTEBOOK_SMOKE": "1", "CONVJAX_DATA_DIR": str(MNIST_DIR),
                       "TMPDIR": str(tmp_path), "JAX_PLATFORMS": "cpu",
                       "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}.items():
        monkeypatch.setenv(key, value)  # the kernel process inherits them
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                            cwd=ROOT, capture_output=True, text=True).stdout
    colab_runs = (ROOT / "runs" / "colab").exists()
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    assert time.perf_counter() - start < 600  # the limit for the whole notebook
    streams, markdown, images = "", "", 0
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            if o.output_type == "stream":
                streams += o.text
            elif o.output_type == "display_data":
                markdown += o.data.get("text/markdown", "")
                images += "image/png" in o.data
    assert "install skipped: smoke mode" in streams
    # Results go to a fresh temporary directory (here under TMPDIR), not into the repository.
    out = pathlib.Path(re.search(r"results in (\S+)", streams).group(1))
    assert out.parent == tmp_path and out.name.startswith("convjax-notebook-")
    assert "8 cpu device(s)" in streams
    assert ("parallel=seeds: 8 seeds over 8 device(s), batch 64 per seed, compute dtype "
            "bfloat16") in streams
    assert "| Conv_0: conv2d(8, 1, padding=same) | 28x28x8 |" in markdown  # explain table
    assert images == 6  # two plots per experiment
    for name in ("bottleneck", "kernel_sizes", "filter_counts"):
        rows = [json.loads(x) for x in (out / name / "results.jsonl").read_text().splitlines()]
        assert len(rows) == 16 and {r["seed"] for r in rows} == set(range(8)), name
        assert {r["train"]["compute_dtype"] for r in rows} == {"bfloat16"}
        assert {r["devices"] for r in rows} == {8} and rows[0]["seeds_trained_together"] == 8
        assert f"{name}: 2 epoch program(s) compiled for 2 config(s)" in streams
        assert (out / name / "summary.md").read_text() in markdown
        assert "bfloat16 compute" in markdown
    # Nothing was written into the repository: no new or changed file, nor runs/colab
    # (ignored by git, the notebook's folder on Colab).
    assert subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                          cwd=ROOT, capture_output=True, text=True).stdout == status
    assert (ROOT / "runs" / "colab").exists() == colab_runs
