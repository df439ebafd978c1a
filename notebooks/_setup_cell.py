# Setup: works in a local JupyterLab (after `pip install -e .`) and in Colab (clones the course once).
import os
import subprocess
import sys

REPO_URL = "https://github.com/dcgan-course/dcgan-course.git"  # the course's address: change it here if you fork
try:
    import dcgan_utils
except ImportError:  # Colab, or a kernel without the package: fetch the course and install it
    if not os.path.isdir("dcgan-course"):
        subprocess.run(["git", "clone", "--depth", "1", REPO_URL, "dcgan-course"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", "dcgan-course"], check=True)
    sys.path.insert(0, os.path.abspath("dcgan-course"))
    os.chdir("dcgan-course/notebooks")
    import dcgan_utils
if "google.colab" in sys.modules:  # let ipywidgets sliders draw in Colab
    from google.colab import output

    output.enable_custom_widget_manager()
