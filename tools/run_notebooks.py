#!/usr/bin/env python
"""Execute the course notebooks headless with papermill, in order, and stop at the first failure.

    python tools/run_notebooks.py                      # every notebooks/NN_*.ipynb -> runs/executed/
    python tools/run_notebooks.py --fast               # CI: tiny widths, a few dozen steps (DCGAN_FAST=1)
    python tools/run_notebooks.py 02 03_train_fashion_mnist_64.ipynb --out /tmp/nb

Each notebook runs with its working directory set to notebooks/ (as in JupyterLab), so its run folders land
in notebooks/runs/ (git ignores it) unless ``--runs-dir`` says otherwise. The executed copies, with all their
outputs, go to ``--out``; the committed notebooks are never modified. On a failure the command exits with
status 1 and names the notebook and the cell that failed (the full traceback is in the executed copy).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
DEFAULT_OUT = REPO_ROOT / "runs" / "executed"


class NotebookFailed(RuntimeError):
    """A notebook raised an error; the message names the notebook, the cell and the exception."""

    def __init__(self, notebook: Path, message: str, cell_index: int | None = None, ename: str | None = None):
        super().__init__(message)
        self.notebook, self.cell_index, self.ename = notebook, cell_index, ename


def list_notebooks(names: list[str] | None = None, notebooks_dir: Path = NOTEBOOKS_DIR) -> list[Path]:
    """The course notebooks in teaching order (``NN_*.ipynb``), or those ``names`` pick.

    A name may be a file name, a path, a stem without ``.ipynb`` or just the number (``"02"``).
    """
    every = sorted(p for p in notebooks_dir.glob("[0-9][0-9]_*.ipynb"))
    if not names:
        return every
    chosen = []
    for name in names:
        path = Path(name)
        if path.suffix == ".ipynb" and path.is_file():
            chosen.append(path.resolve())
            continue
        matches = [p for p in every if p.name == name or p.stem == name or p.name.split("_", 1)[0] == name]
        if not matches:
            known = ", ".join(p.stem for p in every) or "none"
            raise SystemExit(f"run_notebooks: no notebook matches {name!r} in {notebooks_dir} (known: {known})")
        chosen.extend(matches)
    return chosen


class _QuietAboutEnvironmentParameters(logging.Filter):
    """Hide papermill's warnings about the parameters read from the environment (``FAST = os.environ.get(...)``):
    papermill cannot parse such lines, so it calls the FAST it injects "unknown", although it works."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Passed unknown parameter: FAST")
                    or (message.startswith("Unable to parse line") and "os.environ" in message))


for _name in ("papermill", "papermill.translators"):
    logging.getLogger(_name).addFilter(_QuietAboutEnvironmentParameters())


@contextmanager
def _environment(values: dict[str, str]):
    """Set environment variables for the kernel papermill starts (it inherits ours), then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def run_notebook(notebook: Path, out_dir: Path, fast: bool = False, runs_dir: str | Path | None = None,
                 parameters: dict | None = None, timeout: int | None = None, log_output: bool = False,
                 threads: int | None = None) -> Path:
    """Execute one notebook with papermill (kernel ``python3``, cwd = its folder) into ``out_dir``.

    ``fast`` sets ``DCGAN_FAST=1`` and injects ``FAST=True``; ``runs_dir`` sets ``DCGAN_RUNS_DIR`` (made absolute,
    since the kernel runs in the notebook's folder); ``threads`` sets ``OMP_NUM_THREADS`` for the kernel.
    Returns the executed copy; raises :class:`NotebookFailed`.
    """
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    notebook = Path(notebook).resolve()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir.resolve() / notebook.name
    # no live frontend watches a papermill kernel: plain progress lines and a summary (dcgan_utils.train's
    # progress_mode), not a tqdm widget saved frozen at 0%; an explicit DCGAN_PROGRESS is kept
    env: dict[str, str] = {"DCGAN_PROGRESS": os.environ.get("DCGAN_PROGRESS") or "lines"}
    params = dict(parameters or {})
    if fast:
        env["DCGAN_FAST"] = "1"
        params.setdefault("FAST", True)
    if runs_dir is not None:
        env["DCGAN_RUNS_DIR"] = str(Path(runs_dir).resolve())
    if threads is not None:  # PyTorch reads it when the kernel imports torch
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    try:
        with _environment(env):
            pm.execute_notebook(str(notebook), str(output), parameters=params, kernel_name="python3",
                                cwd=str(notebook.parent), progress_bar=False, log_output=log_output,
                                execution_timeout=timeout)
    except PapermillExecutionError as err:
        # papermill's cell_index counts the cells of the executed copy (its injected parameters included), so
        # name the cell by its place in the notebook the user has open instead.
        index = _original_cell_index(notebook, err.source, err.cell_index)
        first_line = next((line for line in err.source.splitlines() if line.strip()), "")
        raise NotebookFailed(notebook, f"{notebook.name}: cell {index + 1} (In [{err.exec_count}]: "
                             f"{first_line[:60]!r}) failed with {err.ename}: {err.evalue}. Full traceback in "
                             f"{output}", cell_index=index, ename=err.ename) from err
    except Exception as err:  # kernel died, timeout, unreadable notebook
        raise NotebookFailed(notebook, f"{notebook.name}: could not be executed ({type(err).__name__}: {err})",
                             ename=type(err).__name__) from err
    strip_stale_widgets(output)
    tidy_paths(output, runs_dir)
    return output


def tidy_paths(path: Path, runs_dir: str | Path | None = None) -> None:
    """Write the executed copy as if it had run in place: the runs folder passed as ``runs_dir`` (made absolute for
    the kernel) reads as the notebook's default ``runs/`` in its outputs, and papermill's paths are file names, so
    that no machine's folders end up in a committed notebook."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if meta.get(key):
            meta[key] = Path(meta[key]).name
    if runs_dir is not None:
        prefix = str(Path(runs_dir).resolve())
        for cell in nb.cells:
            for out in cell.get("outputs", []):
                if "text" in out:
                    out["text"] = out["text"].replace(prefix, "runs")
                for kind, value in out.get("data", {}).items():
                    if kind.startswith("text/") and isinstance(value, str):
                        out["data"][kind] = value.replace(prefix, "runs")
    nbformat.write(nb, path)


WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def stale_widgets(nb) -> set[str]:
    """The saved widget models (ipywidgets state in the notebook's metadata) that no output shows, directly or
    through another shown widget (a progress bar inside a box, a slider's layout): state from an older run."""
    import json
    import re

    state = nb.get("metadata", {}).get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    todo = [o["data"][WIDGET_VIEW]["model_id"] for c in nb.get("cells", []) for o in c.get("outputs", [])
            if WIDGET_VIEW in o.get("data", {})]
    shown: set[str] = set()
    while todo:
        key = todo.pop()
        if key in state and key not in shown:
            shown.add(key)
            todo += re.findall(r"IPY_MODEL_([0-9a-f]+)", json.dumps(state[key]))
    return set(state) - shown


def strip_stale_widgets(path: Path) -> int:
    """Remove :func:`stale_widgets` from the notebook at ``path`` (and the widget metadata, when none is left);
    returns how many were removed."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    stale = stale_widgets(nb)
    if not stale:
        return 0
    widgets = nb.metadata["widgets"][WIDGET_STATE]
    for key in stale:
        del widgets["state"][key]
    if not widgets["state"]:
        del nb.metadata["widgets"]
    nbformat.write(nb, path)
    return len(stale)


def _original_cell_index(notebook: Path, source: str, fallback: int) -> int:
    """0-based index of the cell with this source in the notebook as written (``fallback`` if not found)."""
    import nbformat

    cells = nbformat.read(notebook, as_version=4).cells
    return next((i for i, cell in enumerate(cells) if cell.source == source), fallback)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python tools/run_notebooks.py",
        description="Execute the course notebooks (notebooks/NN_*.ipynb, in order) headless with papermill. "
                    "Each runs with notebooks/ as its working directory; executed copies go to --out and the "
                    "committed notebooks are left untouched. Stops at the first failing notebook and exits 1, "
                    "naming it and the failing cell.",
        epilog="Examples: '--fast' is what CI runs (a few minutes on 2 CPU cores); "
               "'02 03' runs two notebooks with their full defaults (a GPU is advised).")
    parser.add_argument("notebooks", nargs="*", metavar="NOTEBOOK",
                        help="notebooks to run: numbers (02), stems or file names; default: all, in order")
    parser.add_argument("--out", default=str(DEFAULT_OUT),
                        help="folder for the executed copies (default: runs/executed/ in the repository)")
    parser.add_argument("--fast", action="store_true",
                        help="fast mode: sets DCGAN_FAST=1 and FAST=True (tiny widths, a few dozen steps)")
    parser.add_argument("--runs-dir", help="where notebooks write their run folders (sets DCGAN_RUNS_DIR; "
                                           "default: notebooks/runs/)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for PyTorch in each notebook (sets OMP_NUM_THREADS). On a machine whose "
                             "cores other jobs are using, 1 can be many times faster than the default")
    parser.add_argument("--timeout", type=int, default=None,
                        help="seconds any single cell may run before it counts as failed (default: no limit)")
    parser.add_argument("--log-output", action="store_true", help="stream the notebooks' outputs to the terminal")
    parser.add_argument("--keep-going", action="store_true", help="run the remaining notebooks after a failure")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    notebooks = list_notebooks(args.notebooks)
    if not notebooks:
        print(f"run_notebooks: no NN_*.ipynb notebooks in {NOTEBOOKS_DIR}", file=sys.stderr)
        return 1
    mode = "fast mode" if args.fast else "full mode"
    print(f"Running {len(notebooks)} notebook(s) in {mode} -> {args.out}", flush=True)
    failures: list[NotebookFailed] = []
    start = time.perf_counter()
    for i, notebook in enumerate(notebooks, 1):
        print(f"[{i}/{len(notebooks)}] {notebook.name} ...", end=" ", flush=True)
        t0 = time.perf_counter()
        try:
            run_notebook(notebook, Path(args.out), fast=args.fast, runs_dir=args.runs_dir, timeout=args.timeout,
                         log_output=args.log_output, threads=args.threads)
        except NotebookFailed as err:
            print(f"FAILED after {time.perf_counter() - t0:.0f} s", flush=True)
            print(f"run_notebooks: {err}", file=sys.stderr, flush=True)
            failures.append(err)
            if not args.keep_going:
                break
            continue
        print(f"ok ({time.perf_counter() - t0:.0f} s)", flush=True)
    total = time.perf_counter() - start
    if failures:
        names = ", ".join(f"{f.notebook.name} (cell {f.cell_index}, {f.ename})" for f in failures)
        print(f"run_notebooks: FAILED: {names} [{total:.0f} s]", file=sys.stderr)
        return 1
    print(f"All {len(notebooks)} notebook(s) ran in {total:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
