"""The log is held back until write_out, which TensorFlow's own writer cannot do."""

import glob
import os

import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from charrnn import runs
from charrnn.tensorboard_log import HeldBackLog


def scalar_tags(folder):
    events = EventAccumulator(str(folder))
    events.Reload()
    return events.Tags()["tensors"]


def test_tensorflows_writer_writes_each_summary_at_once_whatever_its_queue(tmp_path):
    writer = tf.summary.create_file_writer(str(tmp_path), max_queue=1000, flush_millis=10**8)
    (event_file,) = glob.glob(os.path.join(tmp_path, "events.*"))
    empty = os.path.getsize(event_file)
    with writer.as_default(step=1):
        tf.summary.scalar("loss", 1.0)
    # no flush, no close: yet the summary is in the file already
    assert os.path.getsize(event_file) > empty
    assert scalar_tags(tmp_path) == ["loss"]


def test_held_back_figures_reach_the_file_only_on_write_out(tmp_path):
    log = HeldBackLog(str(tmp_path), ["training", "validation"])
    log.scalar("training", "loss", 2.5, step=10, description=log.LOSS)
    log.scalar("validation", "loss", 2.7, step=10)
    log.text("training", "sample", "ROMEO:\nhello", step=10)
    assert scalar_tags(tmp_path / "training") == []
    log.write_out()
    assert sorted(scalar_tags(tmp_path / "training")) == ["loss", "sample"]
    assert scalar_tags(tmp_path / "validation") == ["loss"]
    log.write_out()  # nothing pending: nothing written twice
    events = EventAccumulator(str(tmp_path / "training"))
    events.Reload()
    assert len(events.Tensors("loss")) == 1


def test_a_log_without_a_folder_writes_nothing_and_holds_nothing(tmp_path):
    """A worker that is not the chief logs nowhere; nor does it keep the figures (it
    never writes them out: they would grow with the run)."""
    log = HeldBackLog(None, ["training"])
    for step in range(1, 4):
        log.scalar("training", "loss", 1.0, step=step)
        log.text("training", "sample", "text", step=step)
    assert log.pending == []
    log.write_out()
    assert log.pending == []
    assert os.listdir(tmp_path) == []


def test_a_name_is_taken_by_a_log_with_figures_not_by_one_without(tmp_path):
    """A new run refuses a name whose log holds an earlier run's figures (runs.pick_run);
    a run stopped before its first checkpoint left event files with none: not taken."""
    log = tmp_path / "log"
    assert not runs.has_figures(str(log))
    writer = tf.summary.create_file_writer(str(log / "training"))
    writer.flush()
    assert os.listdir(log / "training") and not runs.has_figures(str(log))
    with writer.as_default(step=1):
        tf.summary.scalar("loss", 1.0)
    writer.flush()
    assert runs.has_figures(str(log))
