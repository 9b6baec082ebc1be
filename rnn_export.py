"""Export a checkpoint for use without this repository: a TensorFlow SavedModel that
generates and scores text, the alphabet inside, and a LiteRT model of one step for
phones and other small devices.

    python rnn_export.py RUN export/                       # the run's newest checkpoint
    python rnn_export.py checkpoints/RUN/ckpt-500 export/

OUT_DIR holds, when done (written beside it first, renamed into place at the end):

    saved_model/        TensorFlow SavedModel; signatures (B: any number of rows)
        generate(prime: string [B], length: int32, temperature: float32,
                 top_n: int32, seed: int64) -> text: string [B]
        score(text: string [B]) -> bits_per_char: float32 [B], chars: int32 [B]
        step(codes: int32 [B], state: float32 [B, STATE])
            -> logits: float32 [B, ALPHASIZE], state: float32 [B, STATE]
    step.tflite         LiteRT: the step, float32, built-in ops only
    step_int8.tflite    the same with int8 weights (dynamic range): ~1/4 the size
    model.json          the alphabet (code i is its i-th character) and the sizes,
                        for a program that runs the step itself

generate called with one prime gives exactly the text rnn_play.py prints after that
prime, for the same seed, --topn and --temperature: both run the one compiled
generation loop of generate.py. The graph holds no op that needs a GPU (the fused
GRU's plain matmuls, as generation runs on every device), so it loads anywhere.
"""

from charrnn import tf_quiet  # noqa: F401, I001  (first: quiets TensorFlow's logging before it loads)

import os
import shutil
import sys
import tempfile

from charrnn import ckpt, cli, memory, runs
from charrnn.export import export

PROG = "rnn_export.py"


def parse_args(argv):
    p = cli.ArgumentParser(
        prog=PROG,
        description="Write a checkpoint of rnn_train.py as a TensorFlow SavedModel "
        "(generate, score, step) and LiteRT models of one step.",
    )
    p.add_argument(
        "checkpoint",
        metavar="RUN_OR_CHECKPOINT",
        help="a run name or directory (its newest checkpoint), RUN:best, or a checkpoint such "
        "as checkpoints/RUN/ckpt-500",
    )
    p.add_argument("out_dir", metavar="OUT_DIR", help="a new (or empty) folder to write")
    p.add_argument(
        "--checkpoint-dir",
        default="checkpoints",
        help="where to look for runs (default checkpoints)",
    )
    return p.parse_args(argv)


# ---------------------------------------------------------------------------
# The output folder (what goes into it: charrnn/export.py)


class ExportError(Exception):
    """An OUT_DIR that cannot be written; the message says what to do."""


def check_out_dir(out_dir):
    """Refuse an OUT_DIR that holds anything, or is no folder: nothing is overwritten."""
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ExportError(f"{out_dir} exists and is not empty: name a new folder")
    if os.path.lexists(out_dir) and not os.path.isdir(out_dir):
        raise ExportError(f"{out_dir} exists and is not a folder: name a new folder")


def export_checkpoint(args):
    check_out_dir(args.out_dir)
    prefix = runs.find_checkpoint(args.checkpoint, args.checkpoint_dir, cli.warn)
    model, config = runs.load_model(prefix)
    alphabet = ckpt.alphabet_of(config).chars  # the checkpoint's, as rnn_play.py reads it
    work = work_dir(args.out_dir)
    try:
        export(model, alphabet, work)
        check_out_dir(args.out_dir)  # made meanwhile by another program?
        os.replace(work, os.path.abspath(args.out_dir))  # onto an empty folder, or none
    except OSError as e:
        raise ExportError(f"cannot write {args.out_dir}: {e.strerror}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone if renamed
    print(f"{prefix} exported to {os.path.join(args.out_dir, '')}")
    return 0


def work_dir(out_dir):
    """A new folder beside out_dir (on its file system, so that it can be renamed
    into place whole), its parents made if need be, with the permissions a folder
    made by mkdir would have (mkdtemp's are the owner's only)."""
    parent, name = os.path.split(os.path.abspath(out_dir))  # abspath: no trailing /
    try:
        os.makedirs(parent, exist_ok=True)
        work = tempfile.mkdtemp(prefix=f".{name}.", dir=parent)
    except OSError as e:
        raise ExportError(f"cannot write {e.filename}: {e.strerror}") from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(work, 0o777 & ~umask)
    return work


def main(argv=None):
    args = parse_args(argv)
    cli.utf8_output()  # paths in any language, whatever the locale
    try:
        return export_checkpoint(args)
    except (ckpt.CheckpointError, memory.OutOfMemory, ExportError) as e:
        cli.fail(PROG, e)
    except KeyboardInterrupt:
        print(f"{PROG}: stopped (Ctrl-C); nothing written", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
