"""The TensorBoard log of a run, held back until the checkpoint that covers it is saved.

    log/<run>/training     loss, accuracy, chars_per_second, learning_rate, sample
    log/<run>/validation   loss, accuracy

Both runs write the same tags, so TensorBoard overlays their curves: a validation
curve that turns up while the training curve goes down is overfitting.
"""

import os

import tensorflow as tf


class HeldBackLog:
    """TensorBoard figures, held back in memory until the checkpoint that covers them
    is saved, then written out. The log on disk never runs ahead of the newest
    checkpoint, so a run killed at any moment and resumed logs no step twice.
    (TensorFlow's own writer cannot hold them back: it sends each summary to the
    file at once, whatever its max_queue and flush_millis say; tensorboard_log_test.py
    shows it.)"""

    LOSS = "cross-entropy, nats per character"
    ACCURACY = "next character predicted right"

    def __init__(self, log_dir, runs):
        """log_dir None: a log that writes nothing (a worker that is not the chief)."""
        self.writers = {}
        if log_dir:
            self.writers = {
                run: tf.summary.create_file_writer(os.path.join(log_dir, run)) for run in runs
            }
        self.pending = []

    def scalar(self, run, tag, value, step, description=None):
        self.pending.append((run, tf.summary.scalar, tag, float(value), step, description))

    def text(self, run, tag, text, step):
        # Markdown: a code block keeps the sample's line breaks
        self.pending.append((run, tf.summary.text, tag, f"```\n{text}\n```", step, None))

    def write_out(self):
        pending, self.pending = self.pending, []  # taken first: a failed write never repeats
        if not self.writers:
            return
        for run, summary, tag, value, step, description in pending:
            with self.writers[run].as_default(step=step):
                summary(tag, value, description=description)
        for writer in self.writers.values():
            writer.flush()
