"""The TensorBoard log of a run, held back until the checkpoint that covers it is saved.

    log/<run>/training     loss, accuracy, chars_per_second, learning_rate, sample
    log/<run>/validation   loss, accuracy

Both runs write the same tags, so TensorBoard overlays their curves: a validation
curve that turns up while the training curve goes down is overfitting.

Each figure is written exactly once, however the process is killed: the figures a
checkpoint covers are saved inside it (as JSON) and written to the log right after;
a resumed run writes those of its checkpoint that the log does not hold yet (the
process was killed between the two writes).
"""

import json
import os

import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from charrnn.ckpt import short_reason
from charrnn.cli import UsageError

SUMMARIES = {"scalar": tf.summary.scalar, "text": tf.summary.text}


class HeldBackLog:
    """TensorBoard figures, held back in memory until the checkpoint that covers them
    is saved, then written out. The log on disk never runs ahead of the newest
    checkpoint, so a run killed at any moment and resumed logs no step twice.
    (TensorFlow's own writer cannot hold them back: it sends each summary to the
    file at once, whatever its max_queue and flush_millis say; tests/tensorboard_log_test.py
    shows it.)"""

    LOSS = "cross-entropy, nats per character"
    ACCURACY = "next character predicted right"

    def __init__(self, log_dir, runs):
        """log_dir None: a log that writes nothing (a worker that is not the chief)."""
        self.log_dir = log_dir
        self.writers = {}
        try:
            for run in runs if log_dir else []:
                self.writers[run] = tf.summary.create_file_writer(os.path.join(log_dir, run))
        except (OSError, tf.errors.OpError) as e:  # a file in the way, a read-only folder
            raise UsageError(
                f"cannot write the TensorBoard log in {log_dir} ({short_reason(e)}): "
                "choose another --log-dir"
            ) from None
        self.pending = []  # (run, kind, tag, value, step, description)

    def scalar(self, run, tag, value, step, description=None):
        if self.log_dir:  # (a log that writes nothing holds nothing: no growth in a long run)
            self.pending.append((run, "scalar", tag, float(value), step, description))

    def text(self, run, tag, text, step):
        if self.log_dir:  # Markdown: a code block keeps the sample's line breaks
            self.pending.append((run, "text", tag, f"```\n{text}\n```", step, None))

    def pending_json(self):
        """The figures not written yet, as JSON: what the next checkpoint carries."""
        return json.dumps(self.pending)

    def write_out(self):
        pending, self.pending = self.pending, []  # taken first: a failed write never repeats
        if not self.writers:
            return
        for run, kind, tag, value, step, description in pending:
            with self.writers[run].as_default(step=step):
                SUMMARIES[kind](tag, value, description=description)
        for writer in self.writers.values():
            writer.flush()

    def recover(self, pending_json):
        """Write the figures a checkpoint carries (pending_json) that the log on disk
        lacks: the process that saved the checkpoint was killed before writing them."""
        if not self.writers or not pending_json:
            return
        records = [tuple(r) for r in json.loads(pending_json)]
        runs = {r[0] for r in records}
        logged = {run: logged_steps(os.path.join(self.log_dir, run)) for run in runs}
        self.pending = [r for r in records if (r[2], r[4]) not in logged[r[0]]] + self.pending
        self.write_out()


def logged_steps(folder):
    """{(tag, step)} of every figure in the event files of folder."""
    if not os.path.isdir(folder):
        return set()
    events = EventAccumulator(folder, size_guidance={"tensors": 0}, purge_orphaned_data=False)
    events.Reload()
    return {(tag, e.step) for tag in events.Tags()["tensors"] for e in events.Tensors(tag)}
