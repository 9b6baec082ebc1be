"""Every setting of rnn_train.py, written once: the table below (SETTINGS).

Each entry is a flag (--cell-size for cell_size) with its default, the values it
takes, and a help line that gives the reason for the default. From the table come
the flags and --help, the defaults of a new run, the ranges a checkpoint's config
is checked against (ckpt.check_config), --recipe talk, and what a resumed or
fine-tuned run may change. A new setting is one new entry.

What kind a setting is decides what happens to it across runs:

    MODEL     the weights' shapes: a resume keeps them, --init-from takes the parent's
    LAYOUT    the layout of the batches and of the RNN state: a resume keeps them
    TEXT      what is read: --init-from takes the parent's unless given
    ALPHABET  how a new run's alphabet grows from its text: a resume keeps it
    RECIPE    how the model learns (--recipe talk sets the talk's values)
    RUN       how long, and how often to report or save: a resume may change them
    SESSION   this process only (where, which run, how long now): not saved

A run's checkpoint holds the settings of every kind but SESSION, beside what the
run read from its text (its alphabet, the fingerprint of its files, its parent):
those are the text's, not settings, and no flag sets them.

No TensorFlow here: `--help` answers at once.
"""

import argparse
import math
from dataclasses import dataclass
from typing import Any

from charrnn import cli
from charrnn.cli import (
    UsageError,
    Values,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    seed,
)
from txtutils import VALID_MAX_ROWS, VALID_SEQLEN

MODEL, LAYOUT, TEXT, ALPHABET = "model", "layout", "text", "alphabet"
RECIPE, RUN, SESSION = "recipe", "run", "session"

# What a setting may be, beside cli's numbers (a list's flag reads it an item at a time).
globs = Values(
    "file list",
    str,
    lambda v: type(v) is list and all(type(g) is str for g in v),
    "a list of file names or globs",
)
some_globs = Values("file list", str, lambda v: globs.ok(v) and len(v) > 0, globs.must_be)
text = Values("text", str, lambda v: type(v) is str, "a text")
true_or_false = Values("boolean", bool, lambda v: type(v) is bool, "true or false")
# --min-char-count, --batch-size: a count, or "auto" (one that suits the text)
count_or_auto = Values(
    "whole number",
    lambda text: text if text == "auto" else int(text),
    lambda v: v == "auto" or (type(v) is int and v > 0),
    'a whole number above 0, or "auto"',
)
# Where TensorFlow deletes a run's old checkpoints, it reads their path as a glob: in
# a run's name or its folder, * ? [ would match, and delete, other runs' checkpoints.
GLOB = set("*?[")
# --run, --resume: one folder in CHECKPOINT_DIR and in LOG_DIR ("": the default); ":" is
# RUN:best's, "best" the folder of a run's best checkpoint (runs.BEST_DIR), a leading
# "." hidden (.text is the cache's) or "..", a leading "-" a flag in --resume NAME
run_name = Values(
    "run name",
    str,
    lambda v: (
        type(v) is str
        and v != "best"
        and not v.startswith((".", "-"))
        and not set(v) & (GLOB | set("/\\:"))
        and len(v.encode(errors="surrogateescape")) <= 255  # a file name's most bytes
    ),
    'a folder\'s name of at most 255 bytes, without / \\ : * ? [, not starting with "." '
    'or "-", and not "best"',
)
# --checkpoint-dir: a folder (not ""), no glob character (above); --log-dir, --cache-dir:
# a folder (not "")
folder = Values("folder", str, lambda v: type(v) is str and v != "", "a folder's path")
checkpoint_folder = Values(
    "folder",
    str,
    lambda v: folder.ok(v) and not set(v) & GLOB,
    "a folder's path without * ? or [",
)
# --cpu-replicas: each a logical device made before the batch is known to refuse them
replicas = Values(
    "whole number", int, lambda v: positive_int.ok(v) and v <= 1024, "a whole number from 1 to 1024"
)
# --learning-rate: a number, or "auto" (a peak that falls with the run's length)
rate_or_auto = Values(
    "number",
    lambda text: text if text == "auto" else float(text),
    lambda v: v == "auto" or positive_float.ok(v),
    'a number above 0, or "auto"',
)
# --mixed-precision: on, off, or "auto" (the default)
precision = Values(
    "boolean",
    bool,
    lambda v: type(v) is bool or v == "auto",
    'true, false or "auto"',
)


@dataclass(frozen=True)
class Setting:
    name: str  # the config key; the flag is --name-with-dashes
    default: Any  # None: unset unless a flag sets it
    values: Values
    kind: str
    help: str  # what it is, and why the default
    talk: Any = None  # RECIPE: the talk's own value, for --recipe talk
    flag: dict | None = None  # argparse's keywords for a flag of another shape
    # what a checkpoint without this key was made with (None: the default), or a
    # function of that checkpoint's config that says
    absent: Any = None

    @property
    def option(self):
        return "--" + self.name.replace("_", "-")

    def accepts(self, value):
        """Whether a checkpoint's config may hold this value."""
        return (value is None and self.default is None) or self.values.ok(value)

    def must_be(self):
        return self.values.must_be + (", or null" if self.default is None else "")


# --learning-rate auto: the peak for a run of so many steps, SHORT_PEAK up to SHORT_RUN
# and LONG_PEAK from LONG_RUN on, geometric between. Measured on Shakespeare
# (docs/quality.md): 0.005 ends 0.039 nats/char below 0.003 at 665 steps, 0.021 at
# 1,600; a full run (8,170 steps) ends at 1.311 with 0.003, 1.317 with 0.002, and 0.005
# was 0.021 behind 0.003 at step 4,000.
SHORT_RUN, SHORT_PEAK = 2000, 0.005
LONG_RUN, LONG_PEAK = 8000, 0.003


def auto_learning_rate(run_steps):
    """--learning-rate auto's peak for a run of run_steps steps."""
    if run_steps <= SHORT_RUN:
        return SHORT_PEAK
    if run_steps >= LONG_RUN:
        return LONG_PEAK
    done = math.log(run_steps / SHORT_RUN) / math.log(LONG_RUN / SHORT_RUN)
    return SHORT_PEAK * (LONG_PEAK / SHORT_PEAK) ** done


# --batch-size auto: the talk's TALK_ROWS, or BIG_ALPHABET_ROWS on a CPU for an alphabet
# of BIG_ALPHABET symbols or more. A CPU reads about as many characters a second in 50
# rows as in 200, so fewer rows make more steps a minute. On Shakespeare's ~100 symbols
# that buys nothing (5 and 15 minutes: the same loss with 100 rows as with 200); on a
# Chinese text's ~4,800, each step teaches the softmax more than 150 more rows do: at 3
# minutes 50 rows ended 0.22 nats/char below 200 (docs/quality.md). A GPU does 200 rows
# in the time of 50, so it keeps 200.
TALK_ROWS = 200
BIG_ALPHABET, BIG_ALPHABET_ROWS = 1000, 50


def auto_batch_size(alphasize, replicas=1, on_gpu=False):
    """--batch-size auto's rows for an alphabet of alphasize symbols, rounded up to
    split evenly over the replicas."""
    rows = BIG_ALPHABET_ROWS if alphasize >= BIG_ALPHABET and not on_gpu else TALK_ROWS
    return -(-rows // replicas) * replicas


def with_batch_size(config, alphasize, replicas=1, on_gpu=False):
    """config, its --batch-size auto made the rows it means for this run: what the
    checkpoint saves, so that a resume keeps them."""
    if config["batch_size"] != "auto":
        return config
    return dict(config, batch_size=auto_batch_size(alphasize, replicas, on_gpu))


# ---------------------------------------------------------------------------
# The settings. The model is the talk's (3 x 512 GRU, 30 characters unrolled, 200
# rows a batch, fewer for a big alphabet on a CPU); the recipe learns faster than the
# talk's (--recipe talk gives it back; docs/quality.md shows what each change buys).
S = Setting
SETTINGS = [
    # ---- text and model
    S("data", ["shakespeare/*.txt"], some_globs, TEXT,
      "training text: files, directories or globs ('**' recursive; quote them)",
      flag=dict(nargs="+", metavar="GLOB", type=str)),
    S("validation", None, globs, TEXT,
      "files held out for validation, never trained on, or 'none' (default: the last "
      "files of the sorted list holding over 10%% of the text or over 90 KB of it, "
      "whichever are fewer; none if they hold over a fifth of it). Each validation "
      f"scores at most {VALID_MAX_ROWS * VALID_SEQLEN:,} characters of it, "
      f"{VALID_MAX_ROWS} rows of {VALID_SEQLEN:,} spread evenly, the same each time; "
      "rnn_play.py --score scores all of it",
      flag=dict(nargs="+", metavar="GLOB", type=str)),
    S("seqlen", 30, positive_int, LAYOUT,
      "characters unrolled: the reach of backpropagation through time"),
    S("batch_size", "auto", count_or_auto, LAYOUT,
      "sequences per batch, each row its own contiguous slice of the text (default "
      f"auto: the talk's {TALK_ROWS}; {BIG_ALPHABET_ROWS} on a CPU for an alphabet of "
      f"{BIG_ALPHABET:,} symbols or more, where more steps learn more than more rows)",
      absent=TALK_ROWS),
    S("cell_size", 512, positive_int, MODEL, "GRU units per layer"),
    S("layers", 3, positive_int, MODEL,
      "stacked GRU layers: depth for higher-order structure"),
    S("min_char_count", "auto", count_or_auto, ALPHABET,
      "a character of the training text joins the alphabet (after the talk's 98 "
      "symbols) if it occurs at least N times; rarer ones are read as unknown (default "
      "auto: one in a million characters of the text, at least 2: once is too few to "
      "learn, and each symbol widens the softmax)", flag=dict(metavar="N"), absent=2),
    # ---- training recipe
    S("learning_rate", "auto", rate_or_auto, RECIPE,
      f"Adam's peak learning rate (default auto: {SHORT_PEAK:g} for a run of up to "
      f"{SHORT_RUN:,} steps, where it learns more than {LONG_PEAK:g}, falling to "
      f"{LONG_PEAK:g} at {LONG_RUN:,} steps and beyond, and for a fine-tuning, as "
      f"measured; {LONG_PEAK:g} is 3x the talk's, made safe by warm-up and clipping)",
      talk=0.001),
    S("warmup", 100, non_negative_int, RECIPE,
      "steps of linear warm-up from 0 to the peak learning rate, or --warmup-share of "
      "the run if that ends sooner", talk=0),
    S("warmup_share", 0.1, cli.share, RECIPE,
      "the most of a run (of its steps, or of its --time-limit) that warm-up takes: "
      "100 steps are half of a 3-minute run on a big alphabet, and a tenth learnt "
      "more (docs/quality.md)", absent=1.0),
    S("schedule", "cosine", cli.one_of("constant", "cosine"), RECIPE,
      "the learning rate after warm-up: constant, or a cosine down to --min-lr x the "
      "peak at the end of the run", talk="constant"),
    S("min_lr", 0.01, fraction, RECIPE,
      "the end of the cosine schedule, a fraction of the peak: near 0, so that the "
      "last steps settle the weights, as a short run needs"),
    S("clip_norm", 1.0, non_negative_float, RECIPE,
      "clip the gradients' global norm to this, 0 = never: no early blow-ups", talk=0.0),
    S("weight_decay", 0.3, non_negative_float, RECIPE,
      "shrink the weight matrices (not the biases) by this x the learning rate each "
      "step (AdamW's decoupled decay), 0 = never: a run that passes over the same text "
      "again and again then does better on text it never saw (0.3 beat 0.1 over 3 "
      "passes and matched it over 10)", talk=0.0, absent=0.0),
    S("dropout", 0.2, fraction, RECIPE,
      "fraction of the values dropped between layers and before the logits, in "
      "training, from --dropout-from-epoch on (the talk's keep 0.8)", talk=0.2),
    S("char_dropout", 0.0, fraction, RECIPE,
      "fraction of the characters read in training that are dropped (each read as "
      "nothing), from --dropout-from-epoch on, as the talk does at its --dropout: it "
      "lifts the training loss above the validation loss, for no gain on unseen text",
      talk=0.2,
      # checkpoints before it dropped characters at their --dropout
      absent=lambda saved: saved["dropout"]),
    S("dropout_from_epoch", 5.0, non_negative_float, RECIPE,
      "start dropout only after this many epochs (passes over the text, fractions "
      "too): overfitting comes from passes, and before them dropout only slows "
      "learning (5: half the default run; a 15-minute run on a CPU never gets there)",
      talk=0.0, flag=dict(metavar="EPOCHS"),
      # checkpoints before it said when as a fraction of the run (of its epochs)
      # saved before this setting: from the first step, or after --dropout-from, a
      # fraction of the run's steps, which says epochs once the text is read
      # (with_old_dropout)
      absent=lambda saved: None if "dropout_from" in saved else 0.0),
    S("zero_state_every", 50, non_negative_int, RECIPE,
      "each row of a batch starts from a zero state once every N batches (the rows in "
      "turn, 1 in N of a batch's), 0 = never: a model whose state always carries on "
      "has never seen the zero state that generation and scoring start from, and "
      "begins them with random characters", flag=dict(metavar="N"), talk=0, absent=0),
    S("output_bias", "frequencies", cli.one_of("zeros", "frequencies"), RECIPE,
      "the logits' bias at the first step: zeros, or the log of each symbol's share "
      "of the training text, so that the first steps predict the text's frequencies, "
      "not a uniform guess (a 4,785-symbol softmax otherwise spends its first hundred "
      "steps learning them)", talk="zeros", absent="zeros"),
    S("seed", 0, seed, RECIPE, "random seed: same seed, same initial weights and dropout masks"),
    S("mixed_precision", "auto", precision, RECIPE,
      "compute the matmuls of training in 16 bits (bfloat16 on a CPU, ~1.6x the speed "
      "where the hardware has it; float16 with dynamic loss scaling on a GPU); weights, "
      "softmax and loss stay float32 (default: on only on CPUs whose hardware runs "
      "bfloat16, AVX512-BF16 or AMX; off on GPUs)",
      flag=dict(action=argparse.BooleanOptionalAction)),
    S("deterministic", False, true_or_false, RECIPE,
      "turn on TensorFlow's op determinism, so that a run and its resumed twin give "
      "bit-identical weights (slower on a GPU)", flag=dict(action="store_true", default=None)),
    # ---- run, checkpoints and logs
    S("epochs", 10, positive_int, RUN,
      "passes over the training text, counted from the start of the run"),
    S("max_steps", None, positive_int, RUN,
      "stop after this many batches, counted from the start of the run"),
    S("log_every", 10, positive_int, RUN,
      "batches between training figures (averaged over them)"),
    S("eval_every", 500, positive_int, RUN,
      "batches between validations: one costs ~10 batches' time, so 500 keeps them "
      "to ~2%% of a run"),
    S("sample_every", 500, positive_int, RUN, "batches between generated samples"),
    S("save_every", 250, positive_int, RUN,
      "batches between checkpoints (a minute or two on a CPU); the TensorBoard log is "
      "written out with each, and every other one follows a validation, for the best"),
    S("keep", 5, positive_int, RUN, "checkpoints kept per run, newest first"),
    S("time_limit", None, positive_float, SESSION,
      "stop after this much time (checkpoint saved), whatever the epoch; a cosine "
      "schedule then ends when the time does", flag=dict(metavar="MINUTES")),
    S("run", None, run_name, SESSION, "name of the run (default: the date and time)",
      flag=dict(metavar="NAME")),
    S("resume", None, run_name, SESSION,
      "continue the newest run, or the one named, where it stopped",
      flag=dict(nargs="?", const="", metavar="RUN")),
    S("init_from", None, text, SESSION,
      "fine-tune: a new run that starts from the weights of another run's newest "
      "checkpoint (RUN:best: its best; or the checkpoint given), its architecture and "
      "alphabet, on this --data (default: the parent's)",
      flag=dict(metavar="RUN_OR_CHECKPOINT")),
    S("checkpoint_dir", "checkpoints", checkpoint_folder, SESSION, "where runs keep checkpoints"),
    S("cache_dir", None, folder, SESSION,
      "where the encoded text is kept: encoded once, read a batch's rows at a time by "
      "every run on it "
      "(default: CHECKPOINT_DIR/.text; safe to delete)", flag=dict(metavar="DIR")),
    S("cache_size", 20.0, positive_float, SESSION,
      "GB of encoded text the cache keeps: past it, the entries least recently used "
      "go, never one a run is reading (an edited text is a new entry)",
      flag=dict(metavar="GB")),
    S("log_dir", "log", folder, SESSION, "TensorBoard logs"),
    # ---- data-parallel training (distribute.py)
    S("strategy", "none", cli.one_of("none", "mirrored", "multiworker"), SESSION,
      "data-parallel training with tf.distribute: mirrored = the GPUs of this machine, "
      "multiworker = several machines, as TF_CONFIG describes"),
    S("cpu_replicas", 1, replicas, SESSION,
      "--strategy mirrored on a machine without GPUs: split the CPU into N replicas "
      "(to try distribution out; no faster)", flag=dict(metavar="N")),
    S("collective_timeout", 60.0, positive_float, SESSION,
      "--strategy multiworker: give up on a worker that has not answered for this long",
      flag=dict(metavar="SECONDS")),
]  # fmt: skip
del S
BY_NAME = {s.name: s for s in SETTINGS}
GROUPS = {  # --help's sections, each from its first setting on
    "data": "text and model",
    "learning_rate": "training recipe",
    "epochs": "run, checkpoints and logs",
    "strategy": "data-parallel training",
}
SAVED = [s for s in SETTINGS if s.kind != SESSION]  # what a checkpoint's config holds
DEFAULTS = {s.name: s.default for s in SAVED}
TALK_RECIPE = {s.name: s.talk for s in SAVED if s.talk is not None}
# A resumed run must keep these (its weights, batches and alphabet depend on them)...
ARCHITECTURE = [s.name for s in SAVED if s.kind in (MODEL, LAYOUT, ALPHABET)]
# ...and --init-from these of its parent; it trains on the parent's text unless told.
INHERITED = [s.name for s in SAVED if s.kind == MODEL]
PARENT_TEXT = [s.name for s in SAVED if s.kind == TEXT]


def add_flags(parser):
    """Every setting's flag, in --help's sections, and --recipe. A saved setting's flag
    not given is None, so that merge() can tell it from a value given; a SESSION
    setting's is its default."""
    for s in SETTINGS:
        if s.name in GROUPS:
            group = parser.add_argument_group(GROUPS[s.name])
        if s.name == "learning_rate":
            talk = ", ".join(f"{BY_NAME[k].option} {shown(v)}" for k, v in TALK_RECIPE.items())
            group.add_argument(
                "--recipe",
                choices=["talk"],
                help=f"talk: the talk's original recipe ({talk}), whatever the defaults",
            )
        keywords = {"default": s.default if s.kind == SESSION else None, **(s.flag or {})}
        if s.values.choices:
            keywords.setdefault("choices", s.values.choices)
        elif "action" not in keywords:
            keywords.setdefault("type", s.values)
        said = s.default in (None, False) or "(default" in s.help
        group.add_argument(
            s.option, help=s.help + ("" if said else f" (default {shown(s.default)})"), **keywords
        )


def shown(value):
    """A value as --help shows it: 1 for 1.0, a list as its items."""
    if type(value) is list:
        return " ".join(value)
    return f"{value:g}" if type(value) is float else str(value)


def with_old_dropout(config, saved, run_epochs):
    """config, its dropout_from_epoch said in epochs for a run saved with the old
    --dropout-from (merge leaves it None): that fraction of the run's steps, run_epochs
    epochs long (its --epochs, or fewer for its --max-steps). A --time-limit run's
    fraction was of its time, too: its steps are the nearest measure left."""
    if config["dropout_from_epoch"] is not None:
        return config
    return dict(config, dropout_from_epoch=saved["dropout_from"] * run_epochs)


def saved_value(saved, key):
    """A setting's value in a config saved by any version: its own, else what a config
    saved before the setting existed meant (its `absent`; the default if that is None)."""
    if key in saved:
        return saved[key]
    absent = BY_NAME[key].absent
    if absent is None:
        return DEFAULTS[key]
    return absent(saved) if callable(absent) else absent


def merge(args, saved=None, parent=None):
    """The run's settings (DEFAULTS' keys): the flags given, else the checkpoint's
    (saved: a resumed run's config), else the table's defaults; fine-tuning (parent:
    the config of the checkpoint it starts from) takes the parent's MODEL settings,
    and its text unless --data is given, and LONG_PEAK for --learning-rate auto;
    --recipe talk gives the talk's recipe.
    Raises UsageError if a flag contradicts the architecture (or the alphabet's rule)
    of the run being resumed, or the architecture of the parent."""
    config = dict(DEFAULTS)
    if saved:
        config.update({k: saved_value(saved, k) for k in DEFAULTS})
    if parent:
        config.update({key: parent[key] for key in INHERITED})
        if getattr(args, "data", None) is None:
            config.update({key: parent[key] for key in PARENT_TEXT if key in parent})
    if getattr(args, "recipe", None) == "talk":
        config.update(TALK_RECIPE)
    for key in DEFAULTS:
        given = getattr(args, key, None)
        if given is None:
            continue
        if key == "validation" and [v.lower() for v in given] == ["none"]:
            given = []
        flag = BY_NAME[key].option
        if saved and key in ARCHITECTURE and given != config[key]:
            raise UsageError(
                f"the run being resumed was trained with {flag} {config[key]}, "
                f"not {given}: drop {flag} to resume it, or start a new run"
            )
        if parent and key in INHERITED and given != parent[key]:
            raise UsageError(
                f"--init-from {args.init_from} has {flag} {parent[key]}, not {given}: "
                f"fine-tuning keeps the parent's architecture, so drop {flag}"
            )
        config[key] = given
    if parent and config["learning_rate"] == "auto":  # measured so (docs/your-text.md)
        config["learning_rate"] = LONG_PEAK
    return config
