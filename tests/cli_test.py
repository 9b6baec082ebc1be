"""cli: one-line errors, the argument types, free ports; and the tools without
TensorFlow (fetch_corpus.py, screenshot_tensorboard.py) erring in one line."""

import argparse
import os
import re
import socket

import pytest

from charrnn import cli
from conftest import run_cli


def test_error_is_one_line_with_line_breaks_escaped(capsys):
    cli.error("prog.py", "cannot read a\nb.txt\r")
    assert capsys.readouterr() == ("", "prog.py: error: cannot read a\\nb.txt\\r\n")


def test_fail_is_the_same_line_and_exit_status_2(capsys):
    with pytest.raises(SystemExit) as exited:
        cli.fail("prog.py", ValueError("bad\ninput"))
    assert exited.value.code == 2
    assert capsys.readouterr() == ("", "prog.py: error: bad\\ninput\n")


def test_a_bad_argument_is_one_line_naming_the_type(capsys):
    parser = cli.ArgumentParser(prog="prog.py")
    parser.add_argument("--n", type=cli.positive_int)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--n", "x"])
    assert exited.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "prog.py: error: argument --n: invalid whole number value: 'x' (see --help)\n"


@pytest.mark.parametrize(
    "convert, good, bad, message",
    [
        (cli.positive_int, ["1", "7"], ["0", "-1", str(2**63)], "a whole number from 1 to 2**63-1"),
        (cli.non_negative_int, ["0", "7"], ["-1", str(2**63)], "a whole number from 0 to 2**63-1"),
        (cli.positive_float, ["0.5", "1e9"], ["0", "-1", "inf", "nan"], "a number above 0"),
        (cli.non_negative_float, ["0", "2.5"], ["-0.1", "inf", "nan"], "a number, 0 or more"),
        (cli.fraction, ["0", "0.99"], ["1", "-0.1", "nan"], "at least 0 and below 1"),
    ],
)
def test_argument_types_take_their_range_and_refuse_the_rest(convert, good, bad, message):
    for text in good:
        assert convert(text) == float(text)
    for text in bad:
        with pytest.raises(
            argparse.ArgumentTypeError, match=re.escape(f"must be {message}, got {text}")
        ):
            convert(text)


def test_free_ports_are_distinct_and_free():
    ports = cli.free_ports(5)
    assert len(set(ports)) == 5
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


@pytest.mark.parametrize(
    "tool, args",
    [
        ("fetch_corpus.py", ["one", "two"]),
        ("tools/screenshot_tensorboard.py", ["log", "out.png", "--width", "10"]),
        ("tools/screenshot_tensorboard.py", ["log"]),
    ],
)
def test_the_tools_refuse_a_bad_argument_in_one_line(tool, args):
    result = run_cli(tool, *args, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"{os.path.basename(tool)}: error: ") and line.endswith(" (see --help)")


@pytest.mark.parametrize("tool", ["fetch_corpus.py", "tools/screenshot_tensorboard.py"])
def test_the_tools_explain_themselves(tool):
    result = run_cli(tool, "--help", timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: {os.path.basename(tool)} ")
