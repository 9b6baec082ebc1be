"""Generate text from a trained checkpoint, one character at a time: feed a
character and the state, sample the next character, feed both back.

    python rnn_play.py                        # newest checkpoint of the newest run
    python rnn_play.py RUN --length 0         # endless, until Ctrl-C
    python rnn_play.py --streams 100 --out-dir samples   # 100 samples at once
    python rnn_play.py --score hamlet.txt     # bits per character on a text
"""

import tf_quiet  # noqa: F401, I001  (first: quiets TensorFlow's logging before it loads)

import os
import sys

import numpy as np

import ckpt
import cli
import txtutils
from generate import Generator
from model import mean_loss_and_accuracy

LENGTH = 1000  # characters to generate
TOPN = 2  # the original's choice for a trained model: likely, still varied
SCORE_CHUNK = 1000  # characters per call when scoring; the state is carried between calls
CHUNK = 256  # characters per compiled call: ~30 ms for one stream, still smooth


def parse_args(argv):
    p = cli.ArgumentParser(
        prog="rnn_play.py", description="Generate text from a checkpoint of rnn_train.py."
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        metavar="RUN_OR_CHECKPOINT",
        help="a run name or directory (its newest checkpoint), or a checkpoint such "
        "as checkpoints/RUN/ckpt-500 (default: the newest run)",
    )
    p.add_argument(
        "--length",
        type=cli.non_negative_int,
        default=LENGTH,
        help=f"characters to generate, 0 = until Ctrl-C (default {LENGTH})",
    )
    p.add_argument(
        "--prime",
        default="\n",
        help="text fed to the model first and printed as the start (default: a newline)",
    )
    p.add_argument(
        "--topn",
        type=cli.non_negative_int,
        default=TOPN,
        help=f"sample among the N likeliest characters, 0 = all, 1 = always the "
        f"likeliest (default {TOPN})",
    )
    p.add_argument(
        "--temperature",
        type=cli.positive_float,
        default=1.0,
        help="below 1 is bolder in the likeliest choices, above 1 wilder (default 1.0)",
    )
    p.add_argument("--seed", type=int, help="random seed: the same seed gives the same text")
    p.add_argument(
        "--streams",
        type=cli.positive_int,
        default=1,
        help="independent samples generated at once, printed one after the other "
        "(or see --out-dir); much faster per character than one by one",
    )
    p.add_argument(
        "--out-dir",
        metavar="DIR",
        help="write each sample to DIR/sample-N.txt instead of the console",
    )
    p.add_argument(
        "--score",
        metavar="FILE",
        help="instead of generating, print the model's bits per character and "
        "accuracy on this text file",
    )
    p.add_argument(
        "--checkpoint-dir",
        default="checkpoints",
        help="where to look for runs (default checkpoints)",
    )
    args = p.parse_args(argv)
    if args.prime == []:  # Python 3.11's argparse turns the value of --prime=-- into []
        args.prime = "--"
    if not args.prime:
        p.error("argument --prime: give at least one character")
    if args.length == 0 and (args.streams > 1 or args.out_dir):
        p.error("argument --length: give a length with --streams or --out-dir (0 never ends)")
    return args


def score(model, path):
    """(nats per character, accuracy, characters) of the model on a text file, the
    state carried through the whole text."""
    codes = txtutils.read_file(path).astype(np.int32)
    if len(codes) < 2:
        raise txtutils.CorpusError(f"{path} has fewer than 2 characters: nothing to score")
    x, y = codes[:-1], codes[1:]  # every character predicted but the first
    pieces = (
        (x[None, i : i + SCORE_CHUNK], y[None, i : i + SCORE_CHUNK])  # [1, SCORE_CHUNK]
        for i in range(0, len(x), SCORE_CHUNK)
    )
    return mean_loss_and_accuracy(model, pieces, carry_state=True)


def play(args):
    model, _ = ckpt.load_model(ckpt.resolve(args.checkpoint, args.checkpoint_dir, cli.warn))
    if args.score:
        nats, accuracy, n = score(model, args.score)
        print(
            f"{args.score}: {nats / np.log(2):.3f} bits/char ({nats:.3f} nats/char), "
            f"accuracy {accuracy:.3f}, over {n:,} characters"
        )
        return 0
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**63)
    generator = Generator(model, topn=args.topn, temperature=args.temperature)
    generator.start([txtutils.encode(args.prime)] * args.streams, seed)
    if args.streams == 1 and not args.out_dir:
        stream(generator, args.prime, args.length)
        return 0
    codes = np.concatenate(
        [
            generator.next(CHUNK)  # [STREAMS, LENGTH]
            for _ in range(-(-args.length // CHUNK))
        ],
        axis=1,
    )[:, : args.length]
    samples = [args.prime + txtutils.decode(row) for row in codes]
    if args.out_dir:
        write_samples(samples, args.out_dir)
    else:
        for i, text in enumerate(samples):
            print(f"==== sample {i + 1} of {len(samples)} ====\n{text}")
    return 0


def stream(generator, prime, length):
    """Print as it comes: the prime, then chunks of characters until the length."""
    out = sys.stdout
    out.write(prime)
    n = 0
    while length == 0 or n < length:
        codes = generator.next(CHUNK)[0]
        if length:
            codes = codes[: length - n]
        out.write(txtutils.decode(codes))
        out.flush()
        n += len(codes)
    out.write("\n")


def write_samples(samples, out_dir):
    try:
        os.makedirs(out_dir, exist_ok=True)
        width = len(str(len(samples)))
        for i, text in enumerate(samples):
            path = os.path.join(out_dir, f"sample-{i + 1:0{width}d}.txt")
            with open(path, "w", encoding="utf-8", errors="replace") as f:
                f.write(text + "\n")
    except OSError as e:
        raise txtutils.CorpusError(
            f"cannot write {e.filename}: {e.strerror}; choose another --out-dir"
        ) from None
    print(f"{len(samples)} samples written to {out_dir}/")


def main(argv=None):
    args = parse_args(argv)
    sys.stdout.reconfigure(errors="replace")  # a console that cannot show a character gets '?'
    try:
        return play(args)
    except (ckpt.CheckpointError, txtutils.CorpusError) as e:
        cli.fail("rnn_play.py", e)
    except KeyboardInterrupt:
        print()
        return 0
    except BrokenPipeError:  # e.g. piped into head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
