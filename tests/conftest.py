import errno
import os
import tempfile
from pathlib import Path

import pytest
import torch

# Two threads for the tiny networks here, or one per pytest-xdist worker (-n auto: one worker per core), so
# that workers never fight over the cores (two spinning threads per core made steps ~10x slower).
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)


@pytest.fixture(scope="session")
def mnist_small():
    """256 real MNIST digits from the shipped subset, 32x32."""
    from dcgan_utils import load_dataset

    return load_dataset("mnist", 32, source="subset", limit=256)


@pytest.fixture
def tiny(mnist_small):
    """Keyword arguments for a tiny, fast training run on real digits."""
    return dict(dataset="mnist", image_size=32, width=32, batch_size=32, progress=False, data=mnist_small)


@pytest.fixture
def deny_writes(monkeypatch):
    """``deny_writes(folder)`` makes ``folder`` read-only; as root, which ignores permissions, it also refuses new
    files in it, as a read-only mount would."""
    def deny(folder: Path) -> None:
        folder.chmod(0o555)
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            real_mkstemp = tempfile.mkstemp

            def mkstemp(*args, dir=None, **kwargs):
                if dir is not None and Path(dir).resolve().is_relative_to(folder.resolve()):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
                return real_mkstemp(*args, dir=dir, **kwargs)

            monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    return deny
