"""What a training run says: on the console (the chief's voice only, under a
strategy) and in its TensorBoard log - what it trains on, its progress, and how it
ended, with the exit status that goes with it."""

import math
import os
import signal
import sys
import time

import txtutils
from charrnn import cli
from charrnn.distribute import WorkerLost
from charrnn.model import Diverged
from charrnn.settings import SHORT_PEAK


class TrainingFailed(Exception):
    """The run could not go on: it diverged, or its last steps could not be saved (a
    lost worker is distribute.WorkerLost); the message says what was kept and what to
    do."""


# Why a run stops before its end, in the order that wins when workers differ: a
# signal's number (SIGINT 2, SIGTERM 15) beats the time limit.
GO_ON, OUT_OF_TIME = 0, 1


class Window:
    """Training figures summed over the steps since the last progress line."""

    def __init__(self):
        self.loss = self.accuracy = self.seconds = 0.0
        self.steps = 0

    def add(self, loss, accuracy, seconds):
        self.loss += loss
        self.accuracy += accuracy
        self.seconds += seconds
        self.steps += 1


def format_duration(seconds):
    minutes = int(seconds // 60)
    if minutes >= 60:
        return f"{minutes // 60}h{minutes % 60:02d}m"
    return f"{minutes}m{int(seconds) % 60:02d}s"


class Reports:
    """The console lines and TensorBoard figures of one run. Only the chief speaks
    (say); warnings and the line of a stopping signal go to stderr from any worker."""

    def __init__(self, prog, run, config, total_steps, log, chief=True):
        self.prog, self.run, self.config, self.log = prog, run, config, log
        self.total, self.chief = total_steps, chief

    def say(self, *args, **kwargs):
        if self.chief:
            print(*args, **kwargs)

    def start(self, text, batches_per_epoch, model, dist, step):
        """What the run trains (text: charrnn.corpus.Corpus), on what, and where it writes."""
        run, config = self.run, self.config
        params = sum(math.prod(v.shape) for v in model.trainable_variables)
        replicas = f", {dist.replicas} replicas" if dist.strategy else ""
        if run.resume_from:
            started = f"resuming at step {step}"
        else:
            started = f"new, fine-tuning {run.parent}" if run.parent else "new"
        self.say(
            f"run {run.name}: {started}; "
            f"{config['layers']} x {config['cell_size']} GRU, {params:,} parameters, "
            f"{model.train_dtype.name} matmuls in training{replicas}"
        )
        valid_names = ", ".join(os.path.basename(f) for f in text.valid_files) or "none"
        # fewer characters than whole rows of the validation text hold: rows capped
        in_rows = (len(text.valid) - 1) // txtutils.VALID_SEQLEN * txtutils.VALID_SEQLEN
        capped = text.valid_x is not None and text.valid_x.size < in_rows
        self.say(
            f"training on {len(text.train):,} characters ({len(text.train_files)} files), "
            f"validating on {len(text.valid):,} ({valid_names})"
            + (f", {text.valid_x.size:,} of them, spread evenly, each time" if capped else "")
        )
        self.say(describe_alphabet(text.alphabet, text.unknown, text.min_count))
        if text.codes_folder:
            bytes_ = (len(text.train) + len(text.valid)) * text.train.itemsize
            how = "encoded now" if text.encoded else "encoded by an earlier run"
            self.say(f"the text's codes: {text.codes_folder} ({cli.size(bytes_)}, {how})")
        for path, count in text.not_utf8.items() if self.chief else ():
            cli.warn(
                f"warning: {path}: {count:,} bytes are not UTF-8 and are read as unknown "
                "characters; convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8)"
            )
        self.say(
            f"{batches_per_epoch:,} batches of {config['batch_size']} x "
            f"{config['seqlen']} per epoch; checkpoints in {run.dir}, TensorBoard logs in "
            f"{run.log_dir} (make tensorboard)",
            flush=True,
        )

    def complete(self, step):
        """A run resumed with nothing left to train."""
        self.say(
            f"run {self.run.name} is complete at step {step} of {self.total}: "
            "raise --epochs or --max-steps to train it further"
        )

    def progress(self, window, step, epoch, seconds_left, learning_rate):
        """A progress line, and the training figures averaged over the window."""
        config, log = self.config, self.log
        chars_per_s = window.steps * config["batch_size"] * config["seqlen"] / window.seconds
        loss, accuracy = window.loss / window.steps, window.accuracy / window.steps
        self.say(
            f"step {step:>{len(str(self.total))}}/{self.total}  epoch {epoch + 1}/"
            f"{config['epochs']}  loss {loss:.3f}  acc {accuracy:.3f}  "
            f"{chars_per_s / 1000:.1f}k chars/s  {format_duration(seconds_left)} left",
            flush=True,
        )
        log.scalar("training", "loss", loss, step, log.LOSS)
        log.scalar("training", "accuracy", accuracy, step, log.ACCURACY)
        log.scalar("training", "chars_per_second", chars_per_s, step)
        log.scalar("training", "learning_rate", learning_rate, step)

    def stopping(self, signum):
        """Said on stderr once the loop has taken note of a signal, here or on another
        worker."""
        print(
            f"\nstopping on {signal.Signals(signum).name}: saving a checkpoint first "
            "(Ctrl-C again to quit without saving)",
            file=sys.stderr,
            flush=True,
        )

    def time_spent(self, in_steps, elapsed, first_step):
        """Where this process's time went: the share in training steps (the rest:
        start-up, validation, samples, checkpoints), and when the first step began."""
        if first_step is not None:
            self.say(
                f"time: {in_steps / elapsed:.2f} of {format_duration(elapsed)} in training "
                f"steps, the first after {first_step:.1f} s"
            )

    def end(self, step, reason, minutes, checkpoint, best=None):
        """The last word of a run that ended well, and its exit status: 0, or 128 + the
        number of the signal that stopped it (on any worker), as a shell reports it.
        minutes: the time limit; checkpoint: the newest one saved; best: the run's
        runs.Best, if it keeps one."""
        resume = f"continue with python {self.prog} --resume {self.run.name}"
        if reason > OUT_OF_TIME:
            print(f"stopped at step {step}: checkpoint saved; {resume}", file=sys.stderr)
            return 128 + reason
        if reason == OUT_OF_TIME and step < self.total:
            self.say(
                f"time limit of {minutes:g} minutes reached at step {step}: checkpoint "
                f"{checkpoint} saved; {resume}"
            )
        else:
            self.say(f"done: step {step}, checkpoint {checkpoint}")
        if best and best.step is not None:
            self.say(
                f"the best: step {best.step}, validation loss {best.loss:.3f} "
                f"({self.run.name}:best)"
            )
        return 0

    def failure(self, error, step, saver, multiworker):
        """The TrainingFailed (or WorkerLost) that a divergence, or a lost worker, ends
        the run with; any other error is raised again."""
        run = self.run.name
        if isinstance(error, Diverged):
            peak = self.config["learning_rate"]
            lower = f"--learning-rate {(SHORT_PEAK if peak == 'auto' else peak) / 4:g}"
            if saver.manager.latest_checkpoint:
                return TrainingFailed(
                    f"{error}: training diverged. Nothing was saved after step "
                    f"{saver.saved_step}; resume from there with a lower learning rate: "
                    f"--resume {run} {lower}"
                )
            return TrainingFailed(
                f"{error}: training diverged before any checkpoint; start again with a "
                f"lower learning rate, e.g. {lower}"
            )
        if not multiworker:
            raise error
        return WorkerLost(
            f"lost contact with another worker at step {step} ({type(error).__name__}); "
            f"start every worker again with --resume {run} (the last checkpoint is at step "
            f"{saver.saved_step})"
        )


def describe_alphabet(alphabet, unknown, min_count=None):
    """One line: the alphabet's size, the symbols that came from the text (a few shown;
    min_count: how often each had to occur, when that was decided now), and the shares
    of unknown characters (not in the alphabet) in the training and validation text."""
    extra = alphabet.chars[txtutils.ALPHASIZE :]
    shown = " ".join(c if c.isprintable() else repr(c)[1:-1] for c in extra[:10])
    if len(extra) > 10:
        shown += " ..."
    rule = f", each seen {min_count:,}+ times" if min_count else ""
    origin = f"the talk's 98 + {len(extra):,} from the text{rule}: {shown}"
    origin = origin if extra else "the talk's"
    return (
        f"alphabet: {alphabet.size:,} symbols ({origin}); unknown characters: "
        f"{unknown[0]:.2%} of the training text, {unknown[1]:.2%} of the validation text"
    )


class ReadingProgress:
    """progress(what, done, total) for corpus.read_corpus: a line every EVERY seconds
    while a pass over a big text goes on, none for a text read in a moment."""

    EVERY = 5.0  # seconds

    def __init__(self, chief):
        self.chief = chief
        self.what, self.since, self.said = None, 0.0, 0.0

    def __call__(self, what, done, total):
        now = time.perf_counter()
        if what != self.what:  # a new pass: its first line after EVERY seconds
            self.what, self.since, self.said = what, now, now
        if not self.chief or now - self.said < self.EVERY or not done:
            return
        self.said = now
        left = (total - done) * (now - self.since) / done
        print(
            f"reading the text: {what} {done / total:.0%} of {cli.size(total)}, "
            f"{format_duration(left)} left",
            flush=True,
        )
