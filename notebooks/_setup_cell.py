# Setup: works in a local JupyterLab (after `pip install -r requirements.txt`) and in Colab (clones the course once).
import importlib.util
import os
import subprocess
import sys

# The course's address, kept in this one place (the Colab badges are built from it); DCGAN_COURSE_REPO overrides it.
REPO_URL = os.environ.get("DCGAN_COURSE_REPO", "https://github.com/dcgan-course/dcgan-course.git")
try:
    import dcgan_utils
except ImportError:  # Colab, or a kernel without the package: fetch the course, install it and what it uses
    if not os.path.isdir("dcgan-course"):
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, "dcgan-course"], check=True)
    packages = ["-e", "./dcgan-course[eval]"]  # [eval]: torchmetrics and scipy, for the evaluation notebooks
    if importlib.util.find_spec("ipywidgets") is None:  # Colab ships its own, the version its widgets draw: kept
        packages.append("ipywidgets")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", *packages], check=True)
    importlib.invalidate_caches()
    sys.path.insert(0, os.path.abspath("dcgan-course"))
    import dcgan_utils
if os.path.isdir("dcgan-course/notebooks"):  # in Colab, also after a restart: work in the course's notebooks folder
    os.chdir("dcgan-course/notebooks")
if "google.colab" in sys.modules:  # let ipywidgets sliders draw in Colab
    from google.colab import output

    output.enable_custom_widget_manager()
