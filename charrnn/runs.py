"""Runs: where they live, how one is chosen, opened, locked, saved and restored.

    checkpoints/<run>/ckpt-<step>.index, .data-*   the checkpoints (ckpt.py: what they hold)
    checkpoints/<run>/checkpoint                    TensorFlow's note of the newest
    checkpoints/<run>/lock                          held by the process training the run
    log/<run>/training, log/<run>/validation        its TensorBoard log (tensorboard_log.py)

A run is one model trained, in one or several processes one after the other
(--resume); `--init-from` starts a new run from another's weights. The newest
complete checkpoint is found by its .index file, checked whole before it is trusted,
and a damaged one is passed over, never deleted.
"""

import contextlib
import fcntl
import glob
import json
import math
import os
import shutil
import time
from types import SimpleNamespace

import tensorflow as tf

import txtutils
from charrnn import ckpt, cli, memory
from charrnn.cli import UsageError
from charrnn.model import build_model, check_finite

# ---------------------------------------------------------------------------
# Finding checkpoints


def _step_of(prefix):
    return int(prefix.rsplit("-", 1)[1])


def all_in(run_dir):
    """Prefixes of the complete checkpoints in a run directory, newest first. Found by
    their .index files, which TensorFlow renames into place last, rather than by the
    `checkpoint` state file, which may itself be damaged."""
    found = glob.glob(os.path.join(glob.escape(run_dir), "ckpt-*.index"))
    prefixes = [f.removesuffix(".index") for f in found]
    prefixes = [p for p in prefixes if p.rsplit("-", 1)[1].isdigit()]
    return sorted(prefixes, key=_step_of, reverse=True)


def newest_in(run_dir):
    """Prefix of the newest checkpoint in a run directory, or None."""
    prefixes = all_in(run_dir) if os.path.isdir(run_dir) else []
    return prefixes[0] if prefixes else None


def remove_partial_saves(run_dir):
    """Delete the ckpt-N_temp folders a save leaves when it is killed or fails: never
    a checkpoint, only the pieces of one. Call it holding the run's lock."""
    for partial in glob.glob(os.path.join(glob.escape(run_dir), "ckpt-*_temp")):
        shutil.rmtree(partial, ignore_errors=True)


def newest_good(run_dir, warn):
    """The newest checkpoint of a run that reads back whole. Damaged newer ones are
    skipped, each with a warning that names it; none is deleted."""
    for prefix in all_in(run_dir):
        try:
            ckpt.verify(prefix)
            return prefix
        except ckpt.CheckpointError as e:
            warn(f"warning: {e}; falling back to the one before")
    return None


def newest_run(checkpoint_dir):
    """Name of the run whose newest checkpoint was written last, or None. Of runs
    written at the same time (a copy that kept the times, a file system that keeps
    whole seconds), the last by name: the later one where names are the default's
    date and time, and the same one whatever order the folder lists them in."""
    saved = []  # (when its newest checkpoint was written, run)
    if os.path.isdir(checkpoint_dir):
        for name in os.listdir(checkpoint_dir):
            prefix = newest_in(os.path.join(checkpoint_dir, name))
            if prefix:
                saved.append((os.stat(prefix + ".index").st_mtime_ns, name))
    return max(saved)[1] if saved else None


class RunLock:
    """One writer per run: an exclusive flock on RUN/lock, held while training. The
    kernel releases it when the process ends, however it ends, so a crash never
    leaves it stuck."""

    def __init__(self, run_dir):
        path = os.path.join(run_dir, "lock")
        try:
            self.file = open(path, "a+")  # noqa: SIM115 (held open)
        except OSError as e:
            raise _unwritable(path, e) from None
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            pid = self.file.read().strip() or "?"
            self.file.close()
            raise ckpt.CheckpointError(
                f"{run_dir} is being trained by another process (pid {pid}): "
                "wait for it to finish, or stop it first"
            ) from None
        try:
            self.file.seek(0)
            self.file.truncate()
            self.file.write(f"{os.getpid()}\n")
            self.file.flush()
        except OSError as e:  # a full disk
            self.file.close()
            raise _unwritable(path, e) from None


def _unwritable(path, error):
    return ckpt.CheckpointError(
        f"cannot write {path}: {error.strerror}; a run trains where it may write "
        "(free some space, or train elsewhere with --checkpoint-dir)"
    )


def find_checkpoint(what, checkpoint_dir, warn):
    """Find a checkpoint prefix from what a user typed: None (the newest run), a run
    name under checkpoint_dir, a run directory (its newest good checkpoint), either
    followed by ":best" (the run's checkpoint of the lowest validation loss: Best),
    or a checkpoint prefix."""
    if what is not None and what.endswith(BEST_SUFFIX) and not os.path.exists(what):
        run = what.removesuffix(BEST_SUFFIX)
        run_dir = _run_dir(run, checkpoint_dir)
        if run_dir is None:
            raise ckpt.CheckpointError(f"no run named {run}: see the runs in {checkpoint_dir}/")
        prefix = newest_good(os.path.join(run_dir, BEST_DIR), warn)
        if prefix is None:
            raise ckpt.CheckpointError(
                f"run {run} has no best checkpoint yet: one is kept at each save "
                "that follows a validation"
            )
        return prefix
    if what is None:
        what = newest_run(checkpoint_dir)
        if what is None:
            raise ckpt.CheckpointError(
                f"no checkpoint in {checkpoint_dir}/: train one first "
                "(make train, or python rnn_train.py), or name one"
            )
    if os.path.isfile(what + ".index"):
        ckpt.verify(what)
        return what
    run_dir = _run_dir(what, checkpoint_dir)
    if run_dir is not None:
        prefix = newest_good(run_dir, warn)
        if prefix is None:
            raise ckpt.CheckpointError(f"every checkpoint in {run_dir} is damaged")
        return prefix
    if os.path.isdir(what) or os.path.isdir(os.path.join(checkpoint_dir, what)):
        raise ckpt.CheckpointError(
            f"{what} holds no checkpoint: name a run directory "
            f"from {checkpoint_dir}/ or a checkpoint like RUN/ckpt-100"
        )
    raise ckpt.CheckpointError(
        f"no run or checkpoint named {what}: see the runs in {checkpoint_dir}/"
    )


def _run_dir(name, checkpoint_dir):
    """The run directory a name stands for, a path or a run under checkpoint_dir, in
    that order: the first that holds a checkpoint, or None."""
    for run_dir in (name, os.path.join(checkpoint_dir, name)):
        if newest_in(run_dir):
            return run_dir
    return None


def load_model(path):
    """The model stored at checkpoint path, rebuilt from its own config: (model, config).
    The config and the shapes of the weights are checked (read_config), and the memory
    the model needs, before anything is built."""
    config = ckpt.read_config(path)
    shape = f"{config['layers']} x {config['cell_size']} GRU"
    memory.check(
        memory.needed(config, rows=1, length=1),
        f"the model of {path} ({shape}, {memory.parameters(config):,} weights)",
        "load it on a machine with more memory",
    )
    model = build_model(config)
    status = ckpt.checkpoint_object(model, config).restore(path).expect_partial()
    try:
        status.assert_existing_objects_matched()
    except AssertionError:
        raise ckpt.CheckpointError(
            f"{path} does not hold the weights its config describes"
        ) from None
    return model, config


# ---------------------------------------------------------------------------
# Opening a run to train


def open_run(args, chief):
    """The run to train: its name and folders, and when resuming, the checkpoint to
    resume from and its settings. The chief takes the run's lock first, before it
    chooses a checkpoint that another writer might be adding to."""
    name, resuming = pick_run(args)
    run = SimpleNamespace(
        name=name,
        dir=os.path.join(args.checkpoint_dir, name),
        log_dir=os.path.join(args.log_dir, name),
        lock=None,  # held until the process ends
        resume_from=None,
        saved_config=None,
        parent=None,  # fine-tuning: the checkpoint it starts from, and its config
        parent_config=None,
    )
    if args.init_from is not None:
        if resuming:
            raise UsageError(
                "--init-from starts a new run and --resume continues one: give one of them"
            )
        run.parent = find_checkpoint(args.init_from, args.checkpoint_dir, cli.warn)
        run.parent_config = ckpt.read_config(run.parent)
    if resuming:
        if chief:
            run.lock = RunLock(run.dir)
            remove_partial_saves(run.dir)
        run.resume_from = newest_good(run.dir, cli.warn)
        if run.resume_from is None:
            raise ckpt.CheckpointError(f"every checkpoint in {run.dir} is damaged: start a new run")
        run.saved_config = ckpt.read_config(run.resume_from)
    # the checkpoint this run was fine-tuned from, if it was: a resumed run's, as saved
    run.origin = run.saved_config.get("parent") if resuming else run.parent
    return run


def has_figures(log_dir):
    """Whether a run's log folder holds any figure (a run stopped before its first
    checkpoint leaves event files with none)."""
    # (imported here: TensorBoard's reader is for training alone, not rnn_play.py)
    from charrnn.tensorboard_log import logged_steps

    if not os.path.isdir(log_dir):
        return False
    return any(logged_steps(os.path.join(log_dir, name)) for name in sorted(os.listdir(log_dir)))


def pick_run(args):
    """The name of the run to train, and whether it is resumed."""
    if args.resume is None:
        run = args.run or time.strftime("%Y%m%d-%H%M%S")
        if newest_in(os.path.join(args.checkpoint_dir, run)):
            raise UsageError(
                f"run {run} exists already: continue it with --resume {run}, "
                "or choose another --run"
            )
        best = os.path.join(args.checkpoint_dir, run, BEST_DIR)
        if newest_in(best):  # an earlier run's: it would be this one's bar, and RUN:best
            raise UsageError(
                f"run {run} has the best checkpoint of an earlier run of that name in "
                f"{best}: choose another --run, or delete that folder"
            )
        log = os.path.join(args.log_dir, run)
        if has_figures(log):  # an earlier run's: its curves and this one's would interleave
            raise UsageError(
                f"run {run} has the TensorBoard log of an earlier run of that name in "
                f"{log}: choose another --run, or delete that folder"
            )
        return run, False
    if args.run and args.resume and args.run != args.resume:
        raise UsageError(f"--run {args.run} and --resume {args.resume} name different runs")
    run = args.resume or args.run or newest_run(args.checkpoint_dir)
    if run is None:
        raise UsageError(
            f"nothing to resume: no run in {args.checkpoint_dir}/ has a checkpoint; "
            "start one without --resume"
        )
    if not newest_in(os.path.join(args.checkpoint_dir, run)):
        raise UsageError(
            f"nothing to resume: {args.checkpoint_dir}/{run} has no checkpoint; "
            f"see the runs in {args.checkpoint_dir}/"
        )
    return run, True


def create_folders(run, chief):
    """The run's checkpoint and log folders, made only once the text has been read,
    so that bad input leaves nothing behind. Only the chief writes in them."""
    if not chief:
        return
    try:
        os.makedirs(run.dir, exist_ok=True)
        os.makedirs(run.log_dir, exist_ok=True)
        run.lock = run.lock or RunLock(run.dir)
    except OSError as e:
        raise UsageError(
            f"cannot write in {e.filename}: {e.strerror}; choose another "
            "--checkpoint-dir or --log-dir"
        ) from None


# ---------------------------------------------------------------------------
# Saving and restoring


class Saver:
    """The run's checkpoints - weights, Adam's state, the step, the RNN state of every
    row of the batch and the TensorBoard figures up to the step - each followed by
    writing those figures to the log."""

    def __init__(self, run_dir, model, optimizer, config, log, dist):
        self.model, self.log, self.dist, self.config = model, log, dist, config
        self.run_dir = run_dir
        self.step = tf.Variable(0, dtype=tf.int64)
        self.state = tf.Variable(model.zero_state(config["batch_size"]))  # [BATCH, LAYERS*CELL]
        self.figures = tf.Variable("[]")  # the log's figures up to the step, as JSON
        self.objects = (model, config, optimizer, self.step, self.state)
        self.checkpoint = ckpt.checkpoint_object(*self.objects, log=self.figures)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, run_dir, max_to_keep=config["keep"], checkpoint_name="ckpt"
        )
        self.saved_step = 0
        # beside the newest --keep
        self.best = Best(run_dir, validation_measure(config)) if dist.chief else None
        self.validation = None  # (step, loss) of the last validation

    def validated(self, step, loss):
        """Note the validation loss of step: a save at that step may be the best."""
        self.validation = (step, loss)

    def restore(self, prefix):
        """(step, state [BATCH, LAYERS*CELL]) of the checkpoint at prefix, None: a new
        run's. The figures it covers are written to the log if they are not there yet."""
        if prefix:
            has_figures = tf.train.load_checkpoint(prefix).has_tensor(ckpt.LOG_KEY)
            # (made only for a checkpoint from before the figures travelled inside: each
            # holds the config, whose fingerprint names every file of the text)
            checkpoint = self.checkpoint if has_figures else ckpt.checkpoint_object(*self.objects)
            ckpt.restore(checkpoint, prefix)
            # the saves to come hold this run's settings, not the checkpoint's: a longer
            # --max-steps, say, or the fingerprint a checkpoint of an older version lacks
            self.checkpoint.config.assign(json.dumps(self.config))
            if has_figures:
                try:
                    self.log.recover(self.figures.numpy().decode())
                except (OSError, tf.errors.OpError) as e:  # as after a save: the run goes on
                    cli.warn(
                        "warning: the TensorBoard figures the checkpoint carries could not "
                        f"be written ({ckpt.short_reason(e)})"
                    )
        self.saved_step = int(self.step.numpy())
        return self.saved_step, self.state.value()

    def save(self, step, state, x, y):
        """Checkpoint at step, then write out the log up to it; True if saved. A failed
        save (disk full, say) is reported and leaves the earlier checkpoints as they
        were. state: the RNN state after step, per replica under a strategy; x, y
        [BATCH, SEQLEN]: a batch on which the weights must give a finite loss."""
        check_finite(self.model, step, x, y)
        self.step.assign(step)
        self.state.assign(self.dist.gather(state))  # every worker's part in the save
        if not self.dist.chief:  # the chief alone writes; every worker learns if it could
            saved = self.dist.agree(True)  # (a collective, as below: all go on or fail alike)
            self.saved_step = step if saved else self.saved_step
            return saved
        self.figures.assign(self.log.pending_json())
        try:
            self.manager.save(checkpoint_number=step)
        except (OSError, tf.errors.OpError) as e:
            remove_partial_saves(self.run_dir)  # its pieces: room for the next try
            cli.warn(
                f"warning: could not save a checkpoint at step {step} "
                f"({ckpt.short_reason(e)}); the one at step {self.saved_step} is intact"
            )
            return self.dist.agree(False)
        self.saved_step = step  # on disk, whatever happens to the others next
        self.dist.agree(True)
        if self.best and self.validation and self.validation[0] == step:
            self.best.offer(self.manager.latest_checkpoint, step, self.validation[1])
        try:
            self.log.write_out()
        except (OSError, tf.errors.OpError) as e:  # the checkpoint is safe: say so, go on
            cli.warn(
                f"warning: the TensorBoard log up to step {step} could not be written "
                f"({ckpt.short_reason(e)})"
            )
        return True


# ---------------------------------------------------------------------------
# The best checkpoint

BEST_DIR = "best"  # RUN/best/: the run's checkpoint of the lowest validation loss
BEST_SUFFIX = ":best"  # RUN:best names it wherever a checkpoint is named


def validation_measure(config):
    """What a run's validation loss is measured on: losses compare only if the same
    (the rows a validation takes, and the held-out text, by content)."""
    held_out = config.get("data_fingerprint", {}).get("valid", [])
    return {
        "rows": txtutils.VALID_MAX_ROWS,
        "seqlen": txtutils.VALID_SEQLEN,
        "text": [sha for _, _, sha in held_out],
    }


class Best:
    """The run's checkpoint of the lowest validation loss so far, kept in RUN/best/
    whatever --keep deletes: its files hard-linked there (no copy, where the file
    system allows), beside ckpt-STEP.json that says its step, loss and what the loss
    was measured on (measure). A new best is written whole - its figures, its data,
    its .index last - before the one it replaces is removed, so a kill at any moment
    leaves a complete best, and the newest complete one in best/ is the best. A best
    measured otherwise (other validation rows or text) has no loss to beat: the next
    validated save replaces it."""

    def __init__(self, run_dir, measure):
        self.dir, self.measure = os.path.join(run_dir, BEST_DIR), measure
        prefix = newest_in(self.dir)
        self.step, self.loss = None, math.inf
        if prefix:
            try:
                with open(prefix + ".json") as f:
                    figures = json.load(f)
                self.step, loss = int(figures["step"]), float(figures["loss"])
            except (OSError, ValueError, KeyError, TypeError):
                return  # unreadable: the next validated save becomes the best
            if figures.get("measure") == measure:
                self.loss = loss
            else:
                cli.warn(
                    f"note: the best checkpoint kept, step {self.step}, was validated on "
                    "other rows or text: the next validated save replaces it"
                )

    def offer(self, prefix, step, loss):
        """Keep the checkpoint at prefix, saved at step, if its validation loss (at
        that step) is the lowest so far. A failure to keep it is a warning: training
        goes on, with the best as it was."""
        if not loss < self.loss:
            return
        name = os.path.join(self.dir, os.path.basename(prefix))
        try:
            os.makedirs(self.dir, exist_ok=True)
            with open(name + ".json.tmp", "w") as f:
                json.dump({"step": step, "loss": loss, "measure": self.measure}, f)
            os.replace(name + ".json.tmp", name + ".json")
            files = glob.glob(glob.escape(prefix) + ".data-*") + [prefix + ".index"]
            for source in files:  # the .index last: it marks the checkpoint complete
                target = os.path.join(self.dir, os.path.basename(source))
                with contextlib.suppress(FileNotFoundError):
                    os.remove(target)
                try:
                    os.link(source, target)
                except OSError:  # a file system without hard links
                    shutil.copyfile(source, target)
        except OSError as e:
            cli.warn(
                f"warning: could not keep the best checkpoint, step {step} "
                f"({e.strerror}); the best kept is still step {self.step}"
            )
            return
        # the one replaced, and any pieces of one a kill or full disk left unfinished
        # (no .index: all_in never finds them)
        for path in glob.glob(os.path.join(glob.escape(self.dir), "ckpt-*")):
            if not path.startswith(name + "."):
                with contextlib.suppress(OSError):
                    os.remove(path)
        self.step, self.loss = step, loss
