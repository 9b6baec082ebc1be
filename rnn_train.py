"""Train a character-level language model: stacked GRU cells unrolled over SEQLEN
characters, with the RNN state carried from each batch to the next.

    python rnn_train.py                       # Shakespeare, the talk's model
    python rnn_train.py --data 'src/**/*.py'  # any text
    python rnn_train.py --resume              # continue the newest run

Read train() top to bottom: the set-up (run folder, settings, text, model,
checkpoints), then the loop - step, report, validate, sample, save, stop - and the
last save. The settings and their defaults are charrnn/settings.py's table; what
the loop calls is in charrnn/: training.py (the step, the schedule, validation),
corpus.py (the text), runs.py (folders, checkpoints) and reports.py (what it says).
"""

from charrnn import tf_quiet  # noqa: F401, I001  (first: quiets TensorFlow's logging before it loads)

import math
import os
import signal
import sys
import time

import tensorflow as tf

import txtutils
from charrnn import ckpt, cli, hardware, memory, runs, settings
from charrnn.cli import UsageError
from charrnn.distribute import Distribution, WorkerLost
from charrnn.generate import Generator, default_topn
from charrnn.model import Diverged
from charrnn.reports import GO_ON, OUT_OF_TIME, ReadingProgress, Reports, TrainingFailed, Window
from charrnn.tensorboard_log import HeldBackLog
from charrnn.training import (
    SAMPLE_TOPN,
    learning_rate_at,
    make_model,
    make_train_step,
    read_text,
    run_length,
    text_facts,
    sample,
    valid_per_call,
    validate,
)

PROG = "rnn_train.py"


def parse_args(argv):
    p = cli.ArgumentParser(
        prog=PROG,
        description="Train a character-level GRU language model (TensorFlow without a PhD).",
    )
    settings.add_flags(p)
    return p.parse_args(argv)


class StopRequest:
    """While in use, Ctrl-C and SIGTERM ask the loop to stop after the current batch,
    so that the checkpoint it saves is consistent; a second Ctrl-C or SIGTERM quits at
    once. It stays in use until the last checkpoint is saved. The handler only takes
    note (printing from a signal handler can interrupt a print in progress): the
    loop says what happens."""

    def __enter__(self):
        self.signal = None
        self.previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler)

    def _handle(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum


class Clock:
    """The run's one clock, started when the process starts: the --time-limit deadline
    (set-up included), and the pace of the steps trained so far."""

    def __init__(self, minutes):
        self.start = time.perf_counter()
        self.minutes = minutes
        self.limit = 60 * minutes if minutes else None
        self.training_from = 0.0  # when the training loop began (elapsed seconds)
        self.first_step = None  # when this process began its first step (elapsed seconds)
        self.in_steps = 0.0  # seconds spent in training steps, the rest being overhead

    def stepped(self, began):
        """A training step that began at perf_counter() `began` has ended: its seconds."""
        if self.first_step is None:
            self.first_step = began - self.start
        seconds = time.perf_counter() - began
        self.in_steps += seconds
        return seconds

    def elapsed(self):
        return time.perf_counter() - self.start

    def start_training(self):
        """The training loop begins: the time it has runs from now."""
        self.training_from = self.elapsed()

    def fraction_used(self):
        """The fraction of the time limit's training time used, 0 without one. Set-up
        (reading the text: minutes for a big one) is not the run's progress: counted,
        a long one would skip --warmup-share's warm-up and start at the peak."""
        if not self.limit:
            return 0.0
        left_at_start = self.limit - self.training_from
        if left_at_start <= 0:
            return 1.0
        return min(1.0, (self.elapsed() - self.training_from) / left_at_start)

    def out_of_time(self):
        return self.limit is not None and self.elapsed() >= self.limit

    def time_left(self, steps_left, steps_done):
        """Seconds left at the pace of the steps_done trained since training began,
        validation, samples and checkpoints included, within the limit."""
        left = steps_left * (self.elapsed() - self.training_from) / steps_done
        return min(left, max(0.0, self.limit - self.elapsed())) if self.limit else left


def steps_by_the_end(step, first_step, total, used):
    """The steps the run will have made when it ends: total, or fewer where the time
    limit ends it first, at the pace of the steps this process made so far. used: the
    share of the limit used (Clock.fraction_used; the chief's in a multiworker run)."""
    if not used or step == first_step:  # no limit, or no pace yet
        return total
    return min(total, first_step + (step - first_step) / used)


def read_run_text(args, config, run, dist):
    """The run's text (charrnn.corpus.Corpus), read through the cache of --cache-dir
    and --cache-size, the same on every worker; its batches per epoch and the run's
    steps; and the run's settings, with those that depend on them."""
    cache_dir = args.cache_dir or os.path.join(args.checkpoint_dir, ".text")
    limit = max(1, int(min(args.cache_size * 1e9, 2**62)))  # bytes: 0 would mean no limit
    text = read_text(config, run, dist, cache_dir, limit, ReadingProgress(dist.chief))
    config = settings.with_batch_size(config, text.alphabet.size, dist.replicas, hardware.on_gpu())
    dist.check_batch_size(config["batch_size"])
    batches_per_epoch, total = run_length(config, text)
    config = settings.with_old_dropout(config, run.saved_config, total / batches_per_epoch)
    dist.check_same(text_facts(text, total))
    return text, batches_per_epoch, total, config


def checked_run_config(config, text, run):
    """What each checkpoint says of the run: its settings, and what it read from its
    text (charrnn.corpus.Corpus) - checked, and the memory the run needs on this machine
    too, before any folder is made."""
    run_config = dict(
        config,
        alphabet=text.alphabet.chars,
        alphasize=text.alphabet.size,
        data_fingerprint=text.fingerprint,
        parent=run.origin,
    )
    ckpt.check_config(run_config, "the run's settings")
    validation = None  # a validation call: its rows, and characters of each
    if text.valid_x is not None:
        validation = (len(text.valid_x), valid_per_call(text.alphabet.size))
    memory.check_training(run_config, validation)
    return run_config


def train(args):
    clock = Clock(args.time_limit)
    dist = Distribution.from_flags(args)
    run = runs.open_run(args, dist.chief)
    config = settings.merge(args, run.saved_config, run.parent_config)
    text, batches_per_epoch, total, config = read_run_text(args, config, run, dist)
    run_config = checked_run_config(config, text, run)
    runs.create_folders(run, dist.chief)
    model, optimizer = make_model(run_config, dist, text.symbol_counts)
    if run.parent:  # a new run fine-tuned from another: its weights, grown to this alphabet
        ckpt.load_parent_weights(model, run.parent, run.parent_config)
    log_runs = ["training", "validation"] if text.valid_x is not None else ["training"]
    log = HeldBackLog(run.log_dir if dist.chief else None, log_runs)
    saver = runs.Saver(run.dir, model, optimizer, run_config, log, dist)
    step, state = saver.restore(run.resume_from)  # state: [BATCH, LAYERS*CELL]
    B, T = config["batch_size"], config["seqlen"]
    reports = Reports(PROG, run, config, total, log, dist.chief)
    if step >= total:
        reports.complete(step)
        return 0
    reports.start(text, batches_per_epoch, model, dist, step)
    train_step = make_train_step(model, optimizer, config, dist)
    sampler = Generator(model, topn=default_topn(model.alphasize, SAMPLE_TOPN))
    window, first_step = Window(), step
    clock.start_training()
    reason = GO_ON
    try:
        # The share of --time-limit used, as of the end of the step before: the chief's,
        # so that every worker applies the same learning rate and their weights stay
        # the same (a collective; the others come after each step). A set-up past the
        # limit gives 1: the one step it leaves is at the schedule's end.
        used = dist.stop_together(GO_ON, clock.fraction_used())[1]
        with StopRequest() as stop:
            state = dist.split(state)
            mine = dist.worker_rows(B)  # a slice: a worker reads only its rows of the text
            batches = txtutils.minibatch_sequencer(text.train, B, T, config["epochs"], step, mine)
            for x, y, epoch in batches:  # x, y: [BATCH (this worker's rows), SEQLEN]
                if step >= total:  # (a signal is heeded after the step, by every worker)
                    break
                progress = max(step / total, used)
                run_steps = steps_by_the_end(step, first_step, total, used)
                learning_rate = learning_rate_at(step, progress, config, run_steps)
                optimizer.learning_rate.assign(learning_rate)
                t0 = time.perf_counter()
                # this batch's output state is the next batch's input state
                loss, accuracy, state = train_step(
                    dist.split(x, B),
                    dist.split(y, B),
                    state,
                    tf.constant(step, tf.int64),
                    step >= config["dropout_from_epoch"] * batches_per_epoch,
                )
                loss, accuracy = float(loss), float(accuracy)  # float() waits for the step
                if not math.isfinite(loss):
                    raise Diverged(f"the loss became {loss} at step {step + 1}")
                window.add(loss, accuracy, clock.stepped(t0))
                step += 1
                # the time is the chief's: the run stops where its schedule ends
                out_of_time = dist.chief and clock.out_of_time()
                reason, used = dist.stop_together(
                    int(stop.signal or out_of_time), clock.fraction_used()
                )
                last = step == total or reason == OUT_OF_TIME
                if reason > OUT_OF_TIME:
                    reports.stopping(reason)

                if step % config["log_every"] == 0 or last:
                    left = clock.time_left(total - step, step - first_step)
                    reports.progress(window, step, epoch, left, learning_rate)
                    window = Window()
                if text.valid_x is not None and (step % config["eval_every"] == 0 or last):
                    saver.validated(step, validate(model, text, log, step))
                if dist.chief and (step % config["sample_every"] == 0 or last):
                    sample(sampler, text.alphabet, log, step, config["seed"])
                if step % config["save_every"] == 0:
                    saver.save(step, state, x, y)  # on failure, training goes on: the next retries
                if reason:
                    break
            # the last save, still under StopRequest: a signal now waits for it to end
            if step != saver.saved_step and not saver.save(step, state, x, y):
                again = (  # a run with no checkpoint yet has nothing to resume
                    f"--resume {run.name} from step {saver.saved_step}"
                    if saver.saved_step
                    else "start the run again"
                )
                raise TrainingFailed(
                    f"the last {step - saver.saved_step} steps could not be saved; "
                    f"free some space and {again}"
                )
    except (Diverged, tf.errors.OpError) as e:
        raise reports.failure(e, step, saver, dist.multiworker) from None
    reason = max(reason, stop.signal or GO_ON)  # a signal during the last save counts too
    reports.time_spent(clock.in_steps, clock.elapsed(), clock.first_step)
    return reports.end(step, reason, clock.minutes, saver.manager.latest_checkpoint, saver.best)


def main(argv=None):
    args = parse_args(argv)
    cli.utf8_output()
    try:
        return train(args)
    except (txtutils.CorpusError, ckpt.CheckpointError, memory.OutOfMemory, UsageError) as e:
        cli.fail(PROG, e)  # input the user can fix: exit status 2
    except (TrainingFailed, WorkerLost) as e:
        cli.error(PROG, e)
        return 1
    except KeyboardInterrupt:
        print(f"\n{PROG}: quit without saving; the previous checkpoint is intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
