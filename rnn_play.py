"""Generate text from a trained checkpoint, one character at a time: feed a
character and the state, sample the next character, feed both back.

    python rnn_play.py                        # newest checkpoint of the newest run
    python rnn_play.py RUN --length 0         # endless, until Ctrl-C
    python rnn_play.py --streams 100 --out-dir samples   # 100 samples at once
    python rnn_play.py --score hamlet.txt     # bits per character on a text
"""

from charrnn import tf_quiet  # noqa: F401, I001  (first: quiets TensorFlow's logging before it loads)

import contextlib
import glob
import os
import shutil
import sys
import tempfile
import time

import numpy as np

import txtutils
from charrnn import ckpt, cli, memory, runs
from charrnn.generate import (
    GENERATE_PER_CALL,
    TOPN,
    Generator,
    Scorer,
    default_topn,
    score,
    score_per_call,
)

PROG = "rnn_play.py"

LENGTH = 1000  # characters to generate
# Bytes held per character of each sample until all are printed or written (more
# than one stream, or --out-dir): its text in pieces and joined, up to 4 bytes a
# character each, and a chunk's codes
KEPT_BYTES = 9


def parse_args(argv):
    p = parser()
    args = p.parse_args(argv)
    if args.prime == []:  # Python 3.11's argparse turns the value of --prime=-- into []
        args.prime = "--"
    if args.prime_file is not None and args.prime is not None:
        p.error("argument --prime-file: give --prime or --prime-file, not both")
    args.prime = "\n" if args.prime is None else args.prime
    if not args.prime:
        p.error("argument --prime: give at least one character")
    if args.stop == "":
        p.error("argument --stop: give at least one character")
    if args.length == 0 and keeps_samples(args):
        p.error("argument --length: give a length with --streams or --out-dir (0 never ends)")
    return args


def keeps_samples(args):
    """Whether the samples are kept until all are done, then printed or written (more
    than one stream, or --out-dir), rather than printed as they come."""
    return args.streams > 1 or bool(args.out_dir)


def parser():
    p = cli.ArgumentParser(
        prog=PROG, description="Generate text from a checkpoint of rnn_train.py."
    )
    p.add_argument(
        "checkpoint",
        nargs="?",
        metavar="RUN_OR_CHECKPOINT",
        help="a run name or directory (its newest checkpoint), RUN:best (its checkpoint "
        "of the lowest validation loss), or a checkpoint such as checkpoints/RUN/ckpt-500 "
        "(default: the newest run)",
    )
    p.add_argument(
        "--length",
        type=cli.non_negative_int,
        default=LENGTH,
        help=f"characters to generate, 0 = until Ctrl-C (default {LENGTH})",
    )
    p.add_argument(
        "--prime",
        type=cli.utf8_text,
        help="text fed to the model first and printed as the start (default: a newline)",
    )
    p.add_argument(
        "--prime-file",
        metavar="FILE",
        help="the prime read from a text file (UTF-8, any size; a pipe works too), "
        "instead of --prime",
    )
    p.add_argument(
        "--stop",
        type=cli.utf8_text,
        metavar="TEXT",
        help="end each sample right after the first TEXT it generates (the prime not "
        "counted), or at --length",
    )
    p.add_argument(
        "--topn",
        type=cli.non_negative_int,
        help="sample among the N likeliest characters, 0 = all, 1 = always the "
        f"likeliest (default: {TOPN} per 98 symbols of the model's alphabet, the original's "
        f"{TOPN} for the talk's 98 and that share of a bigger one: {default_topn(4785)} for "
        "4,785 Chinese symbols)",
    )
    p.add_argument(
        "--temperature",
        type=cli.positive_float,
        default=1.0,
        help="divide the logits by it: below 1 more conservative (the likeliest "
        "characters likelier still), above 1 wilder (default 1.0)",
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
        help="write each sample to DIR/sample-N.txt instead of the console (a DIR that "
        "holds no earlier samples)",
    )
    p.add_argument(
        "--score",
        metavar="FILE",
        help="instead of generating, print the model's bits per character and "
        "accuracy on this text file (a pipe works too: /dev/stdin)",
    )
    p.add_argument(
        "--checkpoint-dir",
        default="checkpoints",
        help="where to look for runs (default checkpoints)",
    )
    return p


class Progress:
    """A line on the terminal, rewritten in place: characters done, of how many (if
    known), and the speed since the first compiled call (so compiling it does not
    count)."""

    def __init__(self, total):
        self.total, self.width = total, 0
        self.first = None  # (time, characters done) when the first call returned
        self.shown = None  # when the line was last written
        self.write(0)  # at once: the first call compiles, which takes seconds

    def show(self, done):
        now = time.monotonic()
        if self.first is None:
            if done:  # the first call has returned: it compiled, the next ones only run
                self.first = (now, done)
                self.shown = now
        elif now - self.shown >= 0.2:  # a few times a second is enough to read
            rate = (done - self.first[1]) / (now - self.first[0])
            self.write(done, f", {rate:,.0f} chars/s")
            self.shown = now

    def write(self, done, speed=""):
        if self.total:
            line = f"scoring: {done:,} / {self.total:,} characters ({100 * done // self.total}%)"
        else:  # a pipe: how much is to come is not known
            line = f"scoring: {done:,} characters"
        line += speed
        self.width = max(self.width, len(line))
        sys.stderr.write(f"\r{line:<{self.width}}")
        sys.stderr.flush()

    def clear(self):
        if self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


def play(args):
    prefix = runs.find_checkpoint(args.checkpoint, args.checkpoint_dir, cli.warn)
    if args.score:
        check_scoring_memory(ckpt.read_config(prefix))
    else:
        check_streams_memory(ckpt.read_config(prefix), args)
    if args.out_dir and not args.score:  # now, not after generating what it could not keep
        check_out_dir(args.out_dir)
    model, config = runs.load_model(prefix)
    alphabet = ckpt.alphabet_of(config)
    if args.score:
        progress = Progress if sys.stderr.isatty() else None
        nats, accuracy, n, unknown = score(Scorer(model), args.score, alphabet, progress=progress)
        print(
            f"{args.score}: {nats / np.log(2):.3f} bits/char ({nats:.3f} nats/char), "
            f"accuracy {accuracy:.3f}, over {n:,} characters"
            + (f"; {unknown:.2%} of them not in the model's alphabet (unknown)" if unknown else "")
        )
        return 0
    seed = args.seed if args.seed is not None else int(np.random.SeedSequence().entropy % 2**63)
    if args.stop and not all(c in alphabet.chars for c in args.stop):
        raise cli.UsageError(
            f"--stop {args.stop!r} holds characters that are not in the model's alphabet: "
            "it could never be generated"
        )
    topn = default_topn(model.alphasize) if args.topn is None else args.topn
    generator = Generator(model, topn=topn, temperature=args.temperature)
    out = None if keeps_samples(args) else sys.stdout
    pieces = [args.prime] if args.prime_file is None else txtutils.read_text_pieces(args.prime_file)
    prime = feed_prime(generator, pieces, alphabet, args.streams, seed, echo=out)
    try:
        samples, stopped = generate(generator, alphabet, args.length, args.stop, echo=out), False
    except Stopped as e:  # Ctrl-C: keep what each stream has
        samples, stopped = e.texts, True
    if out:
        return 0
    if args.out_dir:
        write_samples(prime, samples, args.out_dir)
    else:
        for i, text in enumerate(samples):
            print(f"==== sample {i + 1} of {len(samples)} ====\n{prime}{text}")
    if stopped:
        kept = f"written to {args.out_dir}/" if args.out_dir else "printed above"
        raise KeyboardInterrupt(
            f"stopped (Ctrl-C) after {max(map(len, samples)):,} of {args.length:,} "
            f"characters: the samples so far are {kept}"
        )
    return 0


class Stopped(Exception):
    """Ctrl-C during a generation that keeps its text: texts, each stream's so far."""

    def __init__(self, texts):
        super().__init__()
        self.texts = texts


def feed_prime(generator, pieces, alphabet, streams, seed, echo=None):
    """Start generator's streams on the prime, given as pieces of text (one piece, or a
    file read a piece at a time). echo: a file the prime is written to as it is read;
    without one, the prime's text is returned (each sample starts with it). Warns of
    characters not in the alphabet; an empty prime is a UsageError."""
    kept, total, unknown = [], 0, 0
    generator.start(np.zeros([streams, 0], np.int32), seed)
    for text in pieces:
        codes = alphabet.encode(text)  # (CRLF read as LF; the prime is shown as it is)
        if echo:
            echo.write(text)
        else:
            kept.append(text)
        total += len(codes)
        unknown += int(np.count_nonzero(codes == txtutils.UNKNOWN))
        generator.feed(np.broadcast_to(codes, (streams, len(codes))))  # [STREAMS, LENGTH]
    if total == 0:
        raise cli.UsageError("the prime is empty: give at least one character")
    if unknown:
        cli.warn(
            f"warning: {unknown:,} of the prime's {total:,} characters are not in the "
            "model's alphabet: the model reads them as unknown"
        )
    return "".join(kept)


def generate(generator, alphabet, length, stop=None, echo=None):
    """The text of each stream, GENERATE_PER_CALL characters per compiled call, until each has
    length characters (0: no end), or ended right after the first stop it generated;
    generation ends when every stream has. echo: a file that the one stream's text is
    written to as it comes, and nothing is kept (returns None). Ctrl-C raises Stopped
    with the texts so far, where they are kept."""
    streams = len(generator.state)
    texts, tails = [[] for _ in range(streams)], [""] * streams
    try:
        _generate(generator, alphabet, length, stop, echo, texts, tails)
    except KeyboardInterrupt:
        if echo:  # what was generated is on the screen already
            raise
        raise Stopped(["".join(t) for t in texts]) from None
    if echo:
        echo.write("\n")
        return None
    return ["".join(t) for t in texts]


def _generate(generator, alphabet, length, stop, echo, texts, tails):
    """generate's loop: each stream's text to echo or appended to texts[i]."""
    going = np.ones(len(texts), bool)
    done = 0
    while going.any() and (length == 0 or done < length):
        codes = generator.next(GENERATE_PER_CALL)  # [STREAMS, GENERATE_PER_CALL]
        codes = codes[:, : length - done] if length else codes
        done += codes.shape[1]
        for i in np.flatnonzero(going):
            text = alphabet.decode(codes[i])
            if stop:  # looked for across calls: the tail of the last one, then this one
                found = (tails[i] + text).find(stop)
                if found >= 0:
                    text, going[i] = text[: found + len(stop) - len(tails[i])], False
                seen = tails[i] + text
                tails[i] = seen[max(0, len(seen) - len(stop) + 1) :]
            if echo:
                echo.write(text)
                echo.flush()
            else:
                texts[i].append(text)


def check_scoring_memory(config):
    """Refuse --score beyond this machine's memory before any of it is allocated: one
    row of score_per_call(ALPHASIZE) characters, the logits included."""
    memory.check(
        memory.needed(config, 1, score_per_call(config["alphasize"])),
        f"scoring with a {config['layers']} x {config['cell_size']} GRU of "
        f"{config['alphasize']:,} symbols",
        "score on a machine with more memory",
    )


def check_streams_memory(config, args):
    """Refuse --streams (and --length) beyond this machine's memory, before any of it
    is allocated: every stream's states and logits over a call of prime
    (memory.needed), its prime's codes in that call, and the sample kept until all are
    printed or written, with the prime's text once (a --prime-file's size in bytes
    bounds its characters; a pipe's is not known, and not counted)."""
    prime = len(args.prime)
    if args.prime_file is not None and os.path.isfile(args.prime_file):
        prime = os.path.getsize(args.prime_file)
    keeping = keeps_samples(args)
    call = min(max(prime, 1), score_per_call(config["alphasize"], args.streams))

    def needed(streams):
        per_stream = 4 * call + (KEPT_BYTES * args.length if keeping else 0)
        kept_prime = 4 * prime if keeping else 0  # its text: up to 4 bytes a character
        return memory.needed(config, streams, call) + streams * per_stream + kept_prime

    available = memory.available()
    most = (available - needed(0)) // (needed(1) - needed(0)) if available else 0
    if most >= 1:  # a floor's bound: in practice, fewer
        fix = f"ask for fewer streams ({most:,} at the very most here)"
        fix += ", or a shorter --length" if keeping else ""
    else:
        fix = "ask for a shorter --length or prime"
    memory.check(
        needed(args.streams),
        f"--streams {args.streams} of {args.length:,} characters "
        f"({config['layers']} x {config['cell_size']} GRU)",
        fix,
    )


def out_dir_error(out_dir, error):
    return cli.UsageError(
        f"cannot write in --out-dir {out_dir}: {error.strerror}; choose another --out-dir"
    )


def check_out_dir(out_dir):
    """Refuse (UsageError) an --out-dir that holds an earlier run's samples (they would
    be overwritten, or mixed with these: sample-01 beside sample-001), or that cannot be
    made or written: made, a file written in it, and removed again with any folder above
    it this made (a run refused later leaves nothing; write_samples makes it again)."""
    if os.path.isdir(out_dir) and glob.glob(os.path.join(glob.escape(out_dir), "sample-*.txt")):
        raise cli.UsageError(
            f"--out-dir {out_dir} holds the samples of an earlier run (sample-*.txt): "
            "choose another --out-dir, or delete them"
        )
    made = None  # the highest folder this makes: a/ of a/b/c, if a/ is not there
    path = os.path.abspath(out_dir)
    while not os.path.lexists(path) and path != os.path.dirname(path):
        made, path = path, os.path.dirname(path)
    try:
        os.makedirs(out_dir, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
        if made:
            shutil.rmtree(made)  # folders this made, empty again
    except OSError as e:
        raise out_dir_error(out_dir, e) from None


def write_samples(prime, samples, out_dir):
    """Each sample to out_dir/sample-N.txt, each file whole or not at all: written
    beside and renamed into place, so a failure leaves no half-written sample."""
    width = len(str(len(samples)))
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise out_dir_error(out_dir, e) from None
    for i, text in enumerate(samples):
        path = os.path.join(out_dir, f"sample-{i + 1:0{width}d}.txt")
        part = path + ".part"
        try:
            with open(part, "w", encoding="utf-8", errors="replace") as f:
                f.write(prime + text + "\n")
            os.replace(part, path)
        except BaseException as e:  # Ctrl-C too: no part file left
            with contextlib.suppress(OSError):
                os.remove(part)
            if not isinstance(e, OSError):
                raise
            raise cli.UsageError(
                f"cannot write {path}: {e.strerror}; choose another --out-dir"
            ) from None
    print(f"{len(samples)} samples written to {out_dir}/")


def main(argv=None):
    args = parse_args(argv)
    cli.utf8_output()
    try:
        return play(args)
    except (ckpt.CheckpointError, memory.OutOfMemory, txtutils.CorpusError, cli.UsageError) as e:
        cli.fail(PROG, e)
    except KeyboardInterrupt as e:
        if args.score:  # an unfinished score is no figure: say so, and fail as Ctrl-C does
            message = str(e) or f"scoring of {args.score} stopped (Ctrl-C)"
        elif keeps_samples(args):  # samples kept, then printed or written
            message = str(e) or "stopped (Ctrl-C) before every sample was " + (
                f"written to {args.out_dir}/" if args.out_dir else "printed"
            )
        else:
            print()  # one stream, printed as it came: Ctrl-C ends it, as --length 0 asks
            return 0
        print(f"{PROG}: {message}".replace("\n", "\\n"), file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. piped into head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
