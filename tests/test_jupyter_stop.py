"""Jupyter's stop button during training, in a real kernel (jupyter_client), as a student meets it.

The kernel gets a SIGINT (what the stop button sends); the trainer finishes the step, saves, and then stops the
cell with one message naming the step and how to resume (run the cell again), so that the next cells of a
"Run All" do not run on a half-trained model. Running the cell again resumes and says from which step.
"""
import os
import time
from pathlib import Path

import pytest

jupyter_client = pytest.importorskip("jupyter_client")

TRAIN_CELL = """
from dcgan_utils import Trainer
trainer = Trainer(out_dir={run!r}, dataset="mnist", source="subset", limit=256, width=16, batch_size=32,
                  max_steps=100000, sample_every=2, device="cpu", precision="fp32")
trainer.fit()
print("the cell went on")
"""


def _run(kc, code: str, timeout: float = 120) -> tuple[dict, list[dict]]:
    """Execute ``code``; (the reply's content, the IOPub messages of that execution)."""
    msg_id = kc.execute(code)
    return _collect(kc, msg_id, timeout)


def _collect(kc, msg_id: str, timeout: float = 120) -> tuple[dict, list[dict]]:
    outputs, deadline = [], time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(1.0, deadline - time.monotonic()))
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
        outputs.append(msg)
    reply = kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=timeout)
    return reply["content"], outputs


def _text(outputs: list[dict]) -> str:
    parts = []
    for msg in outputs:
        c = msg["content"]
        parts.append(c.get("text", "") + "".join(c.get("traceback", [])) + c.get("data", {}).get("text/plain", ""))
    return "\n".join(parts)


@pytest.fixture()
def kernel():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DCGAN_PROGRESS": "lines"}
    km = jupyter_client.KernelManager(kernel_name="python3")
    km.start_kernel(env=env, extra_arguments=[], cwd=str(Path(__file__).parent))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    yield km, kc
    kc.stop_channels()
    km.shutdown_kernel(now=True)


def test_the_stop_button_saves_stops_the_notebook_and_the_cell_resumes(kernel, tmp_path):
    km, kc = kernel
    run = tmp_path / "run"
    train_id = kc.execute(TRAIN_CELL.format(run=str(run)))
    next_id = kc.execute('print("the next cell ran")')  # queued, as "Run All" queues every cell
    deadline = time.monotonic() + 90
    while not any(int(p.stem[5:]) > 0 for p in run.glob("frames/step_*.png")):  # steps are running
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    km.interrupt_kernel()  # the stop button
    reply, outputs = _collect(kc, train_id)
    text = _text(outputs)
    assert reply["status"] == "error" and reply["ename"] == "TrainingInterrupted", reply
    assert "the cell went on" not in text
    stopped = [line for line in text.splitlines() if line.startswith("TrainingInterrupted")]
    assert len(stopped) == 1 and "run this cell again to resume" in stopped[0], text
    assert "Traceback" not in text and "File " not in text  # one message, not a traceback
    next_reply, next_outputs = _collect(kc, next_id)
    assert next_reply["status"] == "aborted" and "the next cell ran" not in _text(next_outputs)

    from dcgan_utils import load_checkpoint

    step = load_checkpoint(run)["step"]
    assert f"Stopped at step {step} (Ctrl-C)" in stopped[0]
    # running the training cell again (now with a budget it can finish) resumes from the saved step
    reply, outputs = _run(kc, TRAIN_CELL.format(run=str(run)).replace("max_steps=100000", f"max_steps={step + 4}"))
    text = _text(outputs)
    assert reply["status"] == "ok", text
    assert f"at step {step}" in text and "Resuming" in text and "the cell went on" in text
    assert load_checkpoint(run)["step"] == step + 4


def test_on_the_command_line_an_interrupted_run_returns_and_exits_130(tmp_path):
    """The CLI keeps its exit codes (tests/test_reliability.py sends real signals); in a plain Python process,
    outside Jupyter, fit() returns with status 'interrupted' instead of raising."""
    import signal

    from dcgan_utils import Trainer

    trainer = Trainer(out_dir=tmp_path, dataset="mnist", source="subset", limit=64, width=16, batch_size=32,
                      max_steps=50, progress=False, device="cpu", precision="fp32")
    original = trainer.train_step

    def interrupt_at_3(real, *labels):
        if trainer.step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return original(real, *labels)

    trainer.train_step = interrupt_at_3
    assert trainer.fit().status == "interrupted" and trainer.step == 3  # returned: pytest is no Jupyter kernel


def test_the_live_bar_counts_down_the_time_budget_not_the_planned_steps(monkeypatch):
    """Notebook 02 plans 40 epochs (5,600 steps) but stops after 5 minutes: its bar must say minutes, not hours."""
    import io

    from dcgan_utils.progress import training_bar

    monkeypatch.setenv("DCGAN_PROGRESS", "bar")
    bar = training_bar("mnist 32px dcgan", total=5600, initial=0, seconds_left=300)
    bar.fp = io.StringIO()
    bar.start_t -= 60  # one minute in ...
    bar.n = 120  # ... at 2 steps/s: the steps alone would take another 45 min 40 s
    text = str(bar)
    bar.close()
    assert "120/5600" in text and ("<04:00" in text or "<03:59" in text) and "45:" not in text, text
    plain = training_bar("x", total=100, initial=0, seconds_left=None)  # no time budget: tqdm's own estimate
    assert "budget_left" not in (plain.bar_format or "")
    plain.close()
