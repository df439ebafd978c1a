"""The course notebooks: each runs in fast mode, the committed outputs that must not change still match, and
every committed notebook follows the course's conventions.

Picks up every ``notebooks/NN_*.ipynb`` automatically. Fast mode (``DCGAN_FAST=1``) uses tiny widths, a few
dozen steps and the shipped data subset, so everything here runs offline. All notebooks of a session share one
run folder root (``DCGAN_RUNS_DIR``), so a notebook may reuse an earlier one's checkpoint (06 uses 02's); they
run in their number order.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
SETUP_CELL = NOTEBOOKS_DIR / "_setup_cell.py"
SANITIZE_CFG = Path(__file__).resolve().parent / "nbval_sanitize.cfg"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
MAX_BYTES = 3 * 1024 * 1024
# One PyTorch thread per notebook kernel: fast mode's tiny networks gain nothing from a second thread, and when
# other work shares the cores (pytest itself, a busy CI machine) two spinning threads made steps ~10x slower.
KERNEL_THREADS = "1"
REQUIRED_PARAMETERS = ("FAST", "DEVICE", "RUNS_DIR")
NBVAL_TAG = "nbval-check-output"  # nbval compares these cells' outputs (with --nbval-lax, only these)
# Absolute local paths that must never be committed: this machine's, a home folder, a temp folder.
LOCAL_PATH = re.compile(r"(/work/|/tmp/|/home/\w|/root/|/Users/\w|[A-Z]:\\\\Users)")

sys.path.insert(0, str(REPO_ROOT / "tools"))
from run_notebooks import (NotebookFailed, list_notebooks, run_notebook, stale_widgets, strip_stale_widgets,  # noqa: E402
                           tidy_paths)

ids = [p.stem for p in NOTEBOOKS]
# Under pytest-xdist every notebook test runs on one worker, in number order, so a notebook finds the runs of the
# notebooks before it in the shared run folder (06 uses 02's) instead of training them again.
pytestmark = pytest.mark.xdist_group("notebooks")


@pytest.fixture(scope="session")
def shared_runs_dir(tmp_path_factory) -> Path:
    """One run-folder root for every notebook of the session, so later notebooks find earlier checkpoints."""
    return tmp_path_factory.mktemp("notebook_runs")


def _code_cells(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _outputs_text(cell) -> str:
    """Every text an output shows (stream text, text/plain, HTML, error traces), images left out."""
    parts = []
    for out in cell.get("outputs", []):
        parts.append(out.get("text", ""))
        parts.extend(out.get("traceback", []))
        for mime, value in out.get("data", {}).items():
            if mime.startswith("text/") or mime == "application/json":
                parts.append(value if isinstance(value, str) else json.dumps(value))
    return "\n".join(parts)


# ------------------------------------------------------------------------------------------- the runner itself
def test_list_notebooks_orders_by_number_and_picks_by_name():
    every = list_notebooks()
    assert every == NOTEBOOKS
    if NOTEBOOKS:
        first = NOTEBOOKS[0]
        number = first.name.split("_", 1)[0]
        assert list_notebooks([number]) == [first]
        assert list_notebooks([first.stem]) == [first]
    with pytest.raises(SystemExit, match="no notebook matches"):
        list_notebooks(["99_no_such_notebook"])


def test_a_failing_cell_is_named(tmp_path):
    """The runner reports the notebook, the failing cell and the exception, and keeps the executed copy."""
    broken = tmp_path / "98_broken.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell("FAST = False"), nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("raise ValueError('boom')")]
    nb.cells[0].metadata["tags"] = ["parameters"]
    nbformat.write(nb, broken)
    with pytest.raises(NotebookFailed) as info:
        run_notebook(broken, tmp_path / "out", fast=True)
    err = info.value
    assert err.notebook.name == "98_broken.ipynb" and err.ename == "ValueError"
    assert "98_broken.ipynb: cell 3 " in str(err) and "boom" in str(err) and "raise ValueError" in str(err)
    assert nb.cells[err.cell_index].source == "raise ValueError('boom')"  # its index in the notebook as written
    executed = nbformat.read(tmp_path / "out" / "98_broken.ipynb", as_version=4)
    # fast mode injected FAST=True after the parameters cell
    assert any("FAST = True" in c.source for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))


def test_stale_widget_state_is_stripped_and_shown_widgets_are_kept(tmp_path):
    """A progress bar saved by an older execution (its model in the metadata, no output showing it) is removed;
    a slider an output shows, and the layout it refers to, stay."""
    nb = nbformat.v4.new_notebook()
    view = {"application/vnd.jupyter.widget-view+json": {"model_id": "aa11", "version_major": 2, "version_minor": 0}}
    nb.cells = [nbformat.v4.new_code_cell("slider", outputs=[nbformat.v4.new_output("display_data", data=view)])]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"version_major": 2, "version_minor": 0, "state": {
        "aa11": {"model_name": "IntSliderModel", "state": {"layout": "IPY_MODEL_bb22"}},
        "bb22": {"model_name": "LayoutModel", "state": {}},
        "cc33": {"model_name": "FloatProgressModel", "state": {"value": 1820, "max": 1820}}}}}
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, path)
    assert stale_widgets(nb) == {"cc33"}
    assert strip_stale_widgets(path) == 1
    kept = nbformat.read(path, as_version=4).metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    assert set(kept) == {"aa11", "bb22"} and strip_stale_widgets(path) == 0


def test_an_executed_copy_names_no_folder_of_the_machine_that_ran_it(tmp_path):
    """Runs under --runs-dir (made absolute for the kernel) read as runs/ in the outputs; papermill's paths are names."""
    runs = tmp_path / "elsewhere" / "runs_here"
    line = f"Resuming {runs}/02_mnist/checkpoint.pt at step 5\n"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x", outputs=[nbformat.v4.new_output("stream", name="stdout", text=line),
                nbformat.v4.new_output("execute_result", data={"text/plain": str(runs)}, execution_count=1)])]
    nb.metadata["papermill"] = {"input_path": "/some/where/02.ipynb", "output_path": str(tmp_path / "02.ipynb")}
    path = tmp_path / "02.ipynb"
    nbformat.write(nb, path)
    tidy_paths(path, runs)
    text = path.read_text()
    assert str(tmp_path) not in text and "/some/where" not in text
    out = nbformat.read(path, as_version=4).cells[0].outputs
    assert out[0].text == "Resuming runs/02_mnist/checkpoint.pt at step 5\n" and out[1].data["text/plain"] == "runs"


def test_cli_exits_nonzero_on_unknown_notebook():
    result = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "run_notebooks.py"), "99_nothing"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "99_nothing" in result.stderr + result.stdout


# ------------------------------------------------------------------------------------------- (a) fast mode run
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=ids)
def test_notebook_runs_in_fast_mode(notebook, shared_runs_dir, tmp_path):
    executed = run_notebook(notebook, tmp_path, fast=True, runs_dir=shared_runs_dir, threads=int(KERNEL_THREADS))
    nb = nbformat.read(executed, as_version=4)
    errors = [o for c in _code_cells(nb) for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any("DCGAN_FAST" in c.source or "FAST = True" in c.source for c in _code_cells(nb))


# ------------------------------------------------------------------------------------------- (b) nbval
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=ids)
def test_committed_outputs_still_match(notebook, shared_runs_dir, tmp_path):
    """nbval --nbval-lax re-runs the notebook (fast mode) and compares the cells tagged nbval-check-output (a cell
    tag rather than a comment, so students don't see test markup in their cells).

    The compared cells come early (architecture tables, data statistics), so nbval runs the notebook as committed
    up to its last tagged cell: the cells after it cannot change what it compares, and the whole notebook is
    executed by test_notebook_runs_in_fast_mode."""
    nb = nbformat.read(notebook, as_version=4)
    assert not any("NBVAL_CHECK_OUTPUT" in c.source for c in _code_cells(nb)), "use the nbval-check-output tag"
    tagged = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and NBVAL_TAG in c.metadata.get("tags", [])]
    if not tagged:
        pytest.skip(f"{notebook.name} has no cell tagged {NBVAL_TAG}")
    result = _nbval(nb, tagged[-1], tmp_path / notebook.name, shared_runs_dir)
    assert result.returncode == 0, f"nbval failed on {notebook.name}:\n{result.stdout[-6000:]}\n{result.stderr[-2000:]}"


def test_nbval_fails_when_a_tagged_output_changes(shared_runs_dir, tmp_path):
    """The check above can fail: a committed table with one number changed no longer matches a fresh run."""
    notebook = next(p for p in NOTEBOOKS if p.name.startswith("10_"))
    nb = nbformat.read(notebook, as_version=4)
    last = max(i for i, c in enumerate(nb.cells) if NBVAL_TAG in c.metadata.get("tags", []))
    stream = next(o for o in nb.cells[last].outputs if o.get("output_type") == "stream")
    stream["text"] = re.sub(r"\d", lambda m: str((int(m.group(0)) + 1) % 10), stream["text"], count=1)
    result = _nbval(nb, last, tmp_path / notebook.name, shared_runs_dir)
    assert result.returncode != 0 and "mismatch" in (result.stdout + result.stderr).lower(), result.stdout[-3000:]


def _nbval(nb, last_cell: int, path: Path, runs_dir: Path) -> subprocess.CompletedProcess:
    """nbval (fast mode) on ``nb``'s cells up to ``last_cell``, written to ``path``."""
    nb.cells = nb.cells[:last_cell + 1]
    nbformat.write(nb, path)
    ini = path.parent / "pytest.ini"  # not the course's pytest settings (-n auto): nbval runs cells in order
    ini.write_text("[pytest]\n")
    env = {**os.environ, "DCGAN_FAST": "1", "DCGAN_RUNS_DIR": str(runs_dir),
           "OMP_NUM_THREADS": KERNEL_THREADS, "MKL_NUM_THREADS": KERNEL_THREADS}
    cmd = [sys.executable, "-m", "pytest", "-q", "-c", str(ini), "-p", "no:cacheprovider", "--nbval-lax",
           "--nbval-sanitize-with", str(SANITIZE_CFG), "--nbval-current-env", str(path)]
    return subprocess.run(cmd, cwd=path.parent, env=env, capture_output=True, text=True)


# ------------------------------------------------------------------------------------------- (c) conventions
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=ids)
def test_committed_notebook_follows_the_conventions(notebook):
    size = notebook.stat().st_size
    assert size < MAX_BYTES, f"{notebook.name} is {size / 2**20:.1f} MB: keep figures and GIFs small (< 3 MB)"
    nb = nbformat.read(notebook, as_version=4)
    nbformat.validate(nb)
    code = _code_cells(nb)
    assert nb.cells[0].cell_type == "markdown", "cell 1 must be the markdown introduction"
    assert code and code[0].source.strip() == SETUP_CELL.read_text().strip(), \
        "the first code cell must be exactly notebooks/_setup_cell.py (python tests/test_colab_setup.py copies it)"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one code cell tagged 'parameters'"
    assert code.index(tagged[0]) == 1, "the parameters cell is the second code cell"
    for name in REQUIRED_PARAMETERS:
        assert re.search(rf"^{name}\s*=", tagged[0].source, re.M), f"the parameters cell must set {name}"
    assert 'os.environ.get("DCGAN_FAST"' in tagged[0].source and 'os.environ.get("DCGAN_RUNS_DIR"' in tagged[0].source
    assert not any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells), \
        "committed with papermill's injected parameters: execute it without -p options"
    # executed top to bottom: every code cell ran, in order 1, 2, 3, ...
    counts = [c.execution_count for c in code if c.source.strip()]
    assert counts == list(range(1, len(counts) + 1)), f"execution counts {counts}: re-run top to bottom"
    for i, cell in enumerate(code):
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert not errors, f"code cell {i + 1} has an error output"
        stderr = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stderr")
        assert "Traceback" not in stderr, f"code cell {i + 1} printed a traceback"
    stale = stale_widgets(nb)
    assert not stale, f"{len(stale)} saved widget models that no output shows: re-execute with tools/run_notebooks.py"
    for i, cell in enumerate(nb.cells):
        for text in (cell.source, _outputs_text(cell) if cell.cell_type == "code" else ""):
            match = LOCAL_PATH.search(text)
            assert not match, f"cell {i + 1} contains a local absolute path ({match.group(0)}...): print paths " \
                              "relative to notebooks/"
