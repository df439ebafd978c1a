"""Colab and installation: the setup cell every notebook starts with, the "Open in Colab" badges, and the two
environment files.

The course's address lives in one place, ``REPO_URL`` in ``notebooks/_setup_cell.py`` (the environment variable
``DCGAN_COURSE_REPO`` overrides it, for forks, mirrors and these tests); the badges of the README and of every
notebook's introduction are built from it. After changing it (a fork), run this file as a script,
``python tests/test_colab_setup.py``: it writes ``_setup_cell.py`` into every notebook's first code cell and the
badges into every notebook's first markdown cell and the README, and changes nothing else.
"""
from __future__ import annotations

import ast
import json
import os
import re
import site
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS_DIR = REPO_ROOT / "notebooks"
SETUP_CELL = NOTEBOOKS_DIR / "_setup_cell.py"
README = REPO_ROOT / "README.md"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))
ENV_VAR = "DCGAN_COURSE_REPO"
COLAB = "https://colab.research.google.com"
BADGE_SVG = f"{COLAB}/assets/colab-badge.svg"
# [![Open In Colab](<svg>)](<url>), the url naming the notebook it opens
BADGE = re.compile(r"\[!\[Open In Colab\]\((?P<svg>[^)\s]*)\)\]\((?P<url>[^)\s]*)\)")
COLAB_LINK = re.compile(re.escape(COLAB) + r"/github/[^)\s\"']*")
CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge's names that differ from PyPI's


# ------------------------------------------------------------------------------------------- the address and badges
def default_repo_url() -> str:
    """REPO_URL as the setup cell sets it when DCGAN_COURSE_REPO is not set (read from the file, not run)."""
    for node in ast.parse(SETUP_CELL.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["REPO_URL"]:
            value = node.value
            assert isinstance(value, ast.Call) and ast.unparse(value.func) == "os.environ.get", \
                f"REPO_URL must be os.environ.get({ENV_VAR!r}, <the course's address>)"
            assert ast.literal_eval(value.args[0]) == ENV_VAR
            return ast.literal_eval(value.args[1])
    raise AssertionError("notebooks/_setup_cell.py sets no REPO_URL")


def github_repo(url: str) -> str:
    """'owner/name' of a GitHub clone address (Colab opens notebooks from GitHub only)."""
    match = re.fullmatch(r"https://github\.com/([\w.-]+)/([\w.-]+?)(?:\.git)?/?", url)
    assert match, f"REPO_URL {url!r} is not https://github.com/OWNER/REPO(.git): Colab's badges need a GitHub address"
    return f"{match.group(1)}/{match.group(2)}"


def colab_url(notebook: str) -> str:
    """Where Colab opens notebooks/<notebook> of the course's main branch."""
    return f"{COLAB}/github/{github_repo(default_repo_url())}/blob/main/notebooks/{notebook}"


def badge(notebook: str) -> str:
    return f"[![Open In Colab]({BADGE_SVG})]({colab_url(notebook)})"


def _read_notebook(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _write_notebook(path: Path, nb: dict) -> None:
    """The notebooks' own format (nbformat's): indent 1, UTF-8 as is, a final newline."""
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def _source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_repo_url_has_a_default_and_an_environment_override():
    url = default_repo_url()
    github_repo(url)
    text = SETUP_CELL.read_text(encoding="utf-8")
    assert text.count(url) == 1, "the course's address appears once in the setup cell"
    assign = next(node for node in ast.parse(text).body
                  if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "REPO_URL")
    code = compile(ast.Module(body=[assign], type_ignores=[]), str(SETUP_CELL), "exec")

    class FakeOs:
        environ = {ENV_VAR: "file:///somewhere/else"}

    scope = {"os": FakeOs}
    exec(code, scope)
    assert scope["REPO_URL"] == "file:///somewhere/else"
    FakeOs.environ = {}
    exec(code, scope)
    assert scope["REPO_URL"] == url


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_introduction_has_its_own_colab_badge(notebook):
    cells = _read_notebook(notebook)["cells"]
    assert cells[0]["cell_type"] == "markdown", "cell 1 must be the markdown introduction"
    intro = _source(cells[0])
    badges = BADGE.findall(intro)
    assert badges == [(BADGE_SVG, colab_url(notebook.name))], \
        f"{notebook.name}: its first cell needs exactly one badge, {badge(notebook.name)} " \
        "(python tests/test_colab_setup.py writes them)"
    others = [url for cell in cells for url in COLAB_LINK.findall(_source(cell)) if url != colab_url(notebook.name)]
    assert not others, f"{notebook.name} links to Colab pages that are not its own: {others}"


def test_readme_badges_open_every_notebook_and_name_it():
    text = README.read_text(encoding="utf-8")
    # each README badge is followed by the notebook's name: [![Open In Colab](svg)](url) `NN_name`
    labelled = re.findall(BADGE.pattern + r"\s*`(?P<name>[^`]+)`", text)
    assert len(labelled) == len(BADGE.findall(text)), "every README badge is followed by its notebook's `name`"
    assert sorted(name for _, _, name in labelled) == [p.stem for p in NOTEBOOKS], \
        "the README has one Colab badge per notebook"
    for svg, url, name in labelled:
        assert (svg, url) == (BADGE_SVG, colab_url(f"{name}.ipynb")), f"README: the badge of {name} should be " \
            f"{badge(name + '.ipynb')} (python tests/test_colab_setup.py writes them)"
    expected = {colab_url(p.name) for p in NOTEBOOKS}
    stray = [url for url in COLAB_LINK.findall(text) if url not in expected]
    assert not stray, f"README links to Colab pages that are not the course's notebooks: {stray}"


def write_setup_cell_and_badges() -> list[Path]:
    """Copy _setup_cell.py into every notebook's first code cell, and write the badges built from REPO_URL into
    every notebook's first markdown cell (under its title) and the README; returns the files it changed."""
    changed = []
    setup = SETUP_CELL.read_text(encoding="utf-8").rstrip("\n")
    for path in NOTEBOOKS:
        nb = _read_notebook(path)
        code = next(c for c in nb["cells"] if c["cell_type"] == "code")
        code["source"] = setup.splitlines(keepends=True)
        intro = nb["cells"][0]
        text = _source(intro)
        if BADGE.search(text):
            text = BADGE.sub(lambda m: badge(path.name), text)
        else:  # under the title line
            title, _, rest = text.partition("\n")
            text = f"{title}\n\n{badge(path.name)}\n" + (f"\n{rest.lstrip(chr(10))}" if rest.strip() else "")
        intro["source"] = text.splitlines(keepends=True)
        before = path.read_text(encoding="utf-8")
        _write_notebook(path, nb)
        if path.read_text(encoding="utf-8") != before:
            changed.append(path)
    text = README.read_text(encoding="utf-8")
    new = BADGE.sub(lambda m: badge(m.group("url").rsplit("/", 1)[-1]), text)
    if new != text:
        README.write_text(new, encoding="utf-8")
        changed.append(README)
    return changed


# ------------------------------------------------------------------------------------------- environment files
def _requirement(line: str) -> tuple[str, str]:
    """('name', 'specifier') of a requirement line such as 'imageio>=2.28' (names normalised as PyPI does)."""
    match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*(.*)", line.strip())
    assert match, f"cannot read the requirement {line!r}"
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    return CONDA_TO_PIP.get(name, name), re.sub(r"\s+", "", match.group(3))


def test_environment_yml_lists_what_requirements_txt_lists():
    yaml = pytest.importorskip("yaml")
    env = yaml.safe_load((REPO_ROOT / "environment.yml").read_text(encoding="utf-8"))
    assert env["channels"][0] == "conda-forge" and "pytorch" not in env["channels"], \
        "PyTorch comes from conda-forge: the pytorch channel stopped publishing after 2.5 (pytorch/pytorch#138506)"
    conda, pip_section = {}, []
    for dep in env["dependencies"]:
        if isinstance(dep, dict):
            pip_section += dep["pip"]
            continue
        name, spec = _requirement(dep)
        if name not in ("python", "pip"):
            conda[name] = spec
    lines = [line.split("#", 1)[0].strip() for line in (REPO_ROOT / "requirements.txt").read_text().splitlines()]
    lines = [line for line in lines if line]
    requirements = dict(_requirement(line) for line in lines if not line.startswith("-"))
    assert conda == requirements, "environment.yml and requirements.txt list different packages or versions"
    assert pip_section == [line for line in lines if line.startswith("-")], "both install the course itself (-e .)"


# ------------------------------------------------------------------------------------------- a fresh environment
def _imports(source: str) -> set[str]:
    """Absolute module names a piece of code imports (shell and magic lines left out)."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("!", "%")))
    names = set()
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


def _course_imports(course: Path) -> list[str]:
    """What the notebooks and the package they use import, the standard library and Colab's own module left out."""
    names = set()
    for path in sorted((course / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        for cell in _read_notebook(path)["cells"]:
            if cell["cell_type"] == "code":
                names |= _imports(_source(cell))
    for path in sorted((course / "dcgan_utils").glob("*.py")):
        names |= _imports(path.read_text(encoding="utf-8"))
    return sorted(n for n in names if n.split(".")[0] not in sys.stdlib_module_names | {"google", "__future__"})


def _hidden(name: str) -> bool:
    """Site-packages entries the fresh environment must not see: the course's own install, and .pth files."""
    return name.endswith(".pth") or "dcgan_utils" in re.sub(r"[-.]", "_", name.lower())


@pytest.mark.slow
def test_setup_cell_installs_the_course_in_a_fresh_environment(tmp_path):
    """Run the setup cell as Colab does, in a new virtual environment without dcgan_utils, in an empty folder:
    it clones the course (this repository's committed HEAD, through DCGAN_COURSE_REPO) and installs it with its
    extras; then everything the notebooks and the package import must import.

    To stay offline and fast, the new environment sees the installed third-party packages (torch, torchmetrics,
    ipywidgets, pip, setuptools...) through a folder of links to this interpreter's site-packages, the course's
    own install and every .pth file left out; pip runs with --no-index and builds with that setuptools, so the
    install must find every dependency already satisfied.
    """
    start = time.perf_counter()
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    overlay = tmp_path / "site-packages"
    overlay.mkdir()
    for directory in map(Path, site.getsitepackages()):
        for entry in sorted(directory.iterdir()) if directory.is_dir() else []:
            if not _hidden(entry.name) and not (overlay / entry.name).exists():
                try:
                    (overlay / entry.name).symlink_to(entry, target_is_directory=entry.is_dir())
                except OSError as err:  # Windows without the right to make links
                    pytest.skip(f"cannot link site-packages: {err}")

    venv = tmp_path / "venv"
    # no pip of its own: it uses this interpreter's pip and setuptools, seen like every other package
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, capture_output=True)
    bindir = venv / ("Scripts" if os.name == "nt" else "bin")
    python = str(bindir / ("python.exe" if os.name == "nt" else "python"))
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "outer_site_packages.pth").write_text(f"{overlay}\n")

    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV") and not k.startswith("DCGAN_")}
    env.update({"PATH": str(bindir) + os.pathsep + env.get("PATH", ""), "PYTHONNOUSERSITE": "1",
                "MPLBACKEND": "Agg", "GIT_TERMINAL_PROMPT": "0", ENV_VAR: REPO_ROOT.as_uri(),
                # offline: every dependency is already there, and the build uses the environment's setuptools
                "PIP_NO_INDEX": "1", "PIP_NO_BUILD_ISOLATION": "0"})
    work = tmp_path / "content"  # Colab's working folder
    work.mkdir()

    def run(code: str, cwd: Path = work) -> subprocess.CompletedProcess:
        return subprocess.run([python, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)

    before = run("import torch\ntry:\n    import dcgan_utils\nexcept ModuleNotFoundError:\n    print('missing')\n"
                 "else:\n    print(dcgan_utils.__file__)")
    assert before.returncode == 0, before.stderr
    assert before.stdout.strip() == "missing", f"the fresh environment already sees dcgan_utils: {before.stdout}"

    setup = SETUP_CELL.read_text(encoding="utf-8")
    report = "\nimport json\nprint(json.dumps({'cwd': os.getcwd(), 'package': dcgan_utils.__file__}))"
    first = run(setup + report)
    assert first.returncode == 0, f"the setup cell failed:\n{first.stdout[-4000:]}\n{first.stderr[-4000:]}"
    course = work / "dcgan-course"
    where = json.loads(first.stdout.strip().splitlines()[-1])
    assert Path(where["cwd"]).resolve() == (course / "notebooks").resolve()
    assert Path(where["package"]).resolve().is_relative_to(course.resolve())
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    cloned = subprocess.run(["git", "-C", str(course), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert cloned.stdout == head.stdout, "the setup cell clones the course's committed HEAD"

    # a later kernel (a restart, the next notebook): the setup cell finds the installed course and clones nothing;
    # then everything the notebooks and the package import, imports
    env[ENV_VAR] = str(tmp_path / "no-such-repository")
    modules = _course_imports(course)
    assert {"dcgan_utils", "torchmetrics.image.fid", "ipywidgets"} <= set(modules)
    again = run(setup + report + textwrap.dedent(f"""
        import importlib
        for name in {modules!r}:
            importlib.import_module(name)
        import scipy.linalg
        print('imported', len({modules!r}))
    """))
    assert again.returncode == 0, f"after the setup cell, an import failed:\n{again.stderr[-4000:]}"
    assert Path(json.loads(again.stdout.splitlines()[-2])["cwd"]).resolve() == (course / "notebooks").resolve()
    print(f"setup cell in a fresh environment: {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    for path in write_setup_cell_and_badges():
        print("wrote", path.relative_to(REPO_ROOT))
