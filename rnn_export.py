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
    web/                a static web page that generates text in the browser: the
                        step for a batch of 1, float32 (and int8 where it is at
                        most half the size), run by LiteRT.js
                        (copied in: the page asks no other host); publish it as it is

    python rnn_export.py RUN --serve    # export into export/RUN-ckpt-N/ (unless there
                                        # already), serve its page on 127.0.0.1:8000
    python rnn_export.py --serve        # the same for the newest run

generate called with one prime gives exactly the text rnn_play.py prints after that
prime, for the same seed, --topn and --temperature: both run the one compiled
generation loop of generate.py. The graph holds no op that needs a GPU (the fused
GRU's plain matmuls, as generation runs on every device), so it loads anywhere.
"""

from charrnn import tf_quiet  # noqa: F401, I001  (first: quiets TensorFlow's logging before it loads)

import functools
import http.server
import json
import os
import shutil
import sys
import tempfile

import tensorflow as tf

from charrnn import ckpt, cli, litertjs, memory, runs, webpage
from charrnn.export import ExportError, check_out_dir, export

PROG = "rnn_export.py"
HOST = "127.0.0.1"  # the page is served to this machine only


def parse_args(argv):
    p = cli.ArgumentParser(
        prog=PROG,
        description="Write a checkpoint of rnn_train.py as a TensorFlow SavedModel "
        "(generate, score, step), LiteRT models of one step, and a web page that "
        "generates text in the browser.",
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        metavar="RUN_OR_CHECKPOINT",
        help="a run name or directory (its newest checkpoint), RUN:best, or a checkpoint such "
        "as checkpoints/RUN/ckpt-500 (with --serve, default: the newest run)",
    )
    p.add_argument(
        "out_dir",
        nargs="?",
        metavar="OUT_DIR",
        help="a new (or empty) folder to write (with --serve, default: export/RUN-ckpt-N)",
    )
    p.add_argument(
        "--checkpoint-dir",
        default="checkpoints",
        help="where to look for runs (default checkpoints)",
    )
    p.add_argument(
        "--no-web",
        action="store_true",
        help="write no web page (OUT_DIR/web/), and so fetch no LiteRT.js runtime",
    )
    p.add_argument(
        "--serve",
        action="store_true",
        help=f"then serve OUT_DIR/web/ on http://{HOST}:PORT until Ctrl-C; an OUT_DIR that "
        "holds this checkpoint's export already is served as it is",
    )
    p.add_argument(
        "--port", type=cli.positive_int, default=8000, help="--serve's port (default 8000)"
    )
    # intermixed: OUT_DIR may follow the options (RUN --checkpoint-dir DIR OUT_DIR)
    args = p.parse_intermixed_args(argv)
    if not args.serve and None in (args.checkpoint, args.out_dir):
        missing = ["RUN_OR_CHECKPOINT"] if args.checkpoint is None else []
        p.error(f"the following arguments are required: {', '.join([*missing, 'OUT_DIR'])}")
    if not 0 < args.port < 65536:
        p.error(f"argument --port: must be from 1 to 65535, got {args.port}")
    if args.serve and args.no_web:
        p.error("argument --serve: there is no page to serve with --no-web")
    return args


# ---------------------------------------------------------------------------
# The output folder (what goes into it, and check_out_dir: charrnn/export.py)


def export_checkpoint(args):
    if args.out_dir is not None:
        check_out_dir(args.out_dir, args.serve)
    prefix = runs.find_checkpoint(args.checkpoint, args.checkpoint_dir, cli.warn)
    config = ckpt.read_config(prefix)
    about = webpage.about(prefix, config)
    out_dir = args.out_dir or default_out_dir(about)
    if not (args.serve and exported_already(out_dir, about)):
        if args.serve and os.path.isfile(os.path.join(out_dir, "web", "model.json")):
            raise ExportError(
                f"{out_dir} holds the export of another model (a run of that name trained "
                "again?): delete that folder, or name another OUT_DIR"
            )
        check_out_dir(out_dir)
        # fetched first: offline, it fails at once, not after minutes of converting
        runtime = None if args.no_web else litertjs.fetch()
        write_export(prefix, about, out_dir, runtime)
        print(f"{prefix} exported to {os.path.join(out_dir, '')}")
    if args.serve:
        serve(os.path.join(out_dir, "web"), args.port)
    return 0


def write_export(prefix, about, out_dir, runtime):
    """Export the checkpoint at prefix into out_dir, its web page too unless runtime (the
    LiteRT.js tarballs) is None: all in a folder beside it, renamed into place whole."""
    model, config = runs.load_model(prefix)
    alphabet = ckpt.alphabet_of(config).chars  # the checkpoint's, as rnn_play.py reads it
    # a link to an empty folder: the work folder goes beside that folder, renamed onto it
    target = os.path.realpath(out_dir)
    work = work_dir(target)
    try:
        export(model, alphabet, work)
        if runtime is not None:
            webpage.write(model, alphabet, about, os.path.join(work, "web"), runtime)
        check_out_dir(out_dir)  # made meanwhile by another program?
        os.replace(work, target)  # onto an empty folder, or none
    except (OSError, tf.errors.OpError) as e:  # TensorFlow's writes fail with its own
        reason = getattr(e, "strerror", None) or ckpt.short_reason(e)
        raise ExportError(f"cannot write {out_dir}: {reason}") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)  # gone if renamed


def default_out_dir(about):
    """--serve's folder when none is named: one per checkpoint, so that a run trained
    further is exported anew, and the same checkpoint served again is not."""
    return os.path.join("export", f"{about['run'].replace(':', '-')}-{about['checkpoint']}")


def exported_already(out_dir, about):
    """True if out_dir holds an export of this checkpoint with its page (an export is
    renamed into place whole: a folder that holds one holds all of it): the same run
    and checkpoint, and the same weights (a run deleted and trained again to the same
    step is another model)."""
    try:
        with open(os.path.join(out_dir, "web", "model.json"), encoding="utf-8") as f:
            info = json.load(f)
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict):
        return False
    named = info.get("run") == about["run"] and info.get("checkpoint") == about["checkpoint"]
    # an export from before model.json held the index's sha256 is known by its name alone
    return named and info.get("index_sha256", about["index_sha256"]) == about["index_sha256"]


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """A static file server that logs no line per request, and whose files a browser
    checks with it before each use: the next run's page may be served at the same place."""

    def end_headers(self):
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, *args):
        pass


def serve(web_dir, port):
    """Serve web_dir on http://HOST:port until Ctrl-C."""
    handler = functools.partial(QuietHandler, directory=web_dir)
    try:
        server = http.server.ThreadingHTTPServer((HOST, port), handler)
    except OSError as e:
        raise ExportError(
            f"cannot serve on {HOST}:{port} ({e.strerror}): choose another --port"
        ) from None
    print(
        f"serving {os.path.join(web_dir, '')} on http://{HOST}:{port}/ (Ctrl-C stops)", flush=True
    )
    with server:
        try:
            server.serve_forever()
        except KeyboardInterrupt:  # how it is meant to end: no error
            print()


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
    except (ckpt.CheckpointError, memory.OutOfMemory, ExportError, litertjs.FetchError) as e:
        cli.fail(PROG, e)
    except KeyboardInterrupt:
        return cli.stopped(PROG)


if __name__ == "__main__":
    sys.exit(main())
