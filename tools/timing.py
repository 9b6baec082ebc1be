"""Timing helpers of the benchmarks (bench.py, bench_export.py): medians of repeated
timings, taken in turn so that what is compared sees the same machine load."""

import time

import numpy as np

from charrnn.generate import GENERATE_PER_CALL, Generator, default_topn


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def speeds_in_turn(runs, repeats):
    """Characters per second of each (function, characters) of runs: medians of timings
    taken in turn, one of each per round, so that all see the same machine load."""
    times = [[] for _ in runs]
    for _ in range(repeats):
        for (run, _), timed in zip(runs, times, strict=True):
            timed.append(median_time(run, 1))
    return [chars / float(np.median(t)) for (_, chars), t in zip(runs, times, strict=True)]


def generation_run(model, streams, chars):
    """rnn_play.py's generation (sampling included, the console not), compiled: a
    function that generates `streams` independent samples of at least `chars`
    characters, and the characters it generates in all."""
    generator = Generator(model, topn=default_topn(model.alphasize))  # rnn_play.py's
    generator.start(np.zeros([streams, 1], np.int32), seed=0)
    generator.next(GENERATE_PER_CALL)  # compiles
    calls = -(-chars // GENERATE_PER_CALL)

    def generate():
        for _ in range(calls):
            generator.next(GENERATE_PER_CALL)

    return generate, streams * calls * GENERATE_PER_CALL
