"""settings.py: one table gives rnn_train.py's flags, defaults, --recipe talk, the
rules of a resume and the checkpoint's checks - and docs/training.md documents each."""

import os
import re

import pytest

import rnn_train
import txtutils
from charrnn import ckpt, settings
from charrnn.model import build_model
from conftest import HERE


def parse(*argv):
    return settings.merge(rnn_train.parse_args(list(argv)))


def test_every_saved_setting_has_a_flag_and_its_default():
    assert parse() == settings.DEFAULTS
    args = vars(rnn_train.parse_args([]))
    assert set(settings.BY_NAME) <= set(args)
    for s in settings.SETTINGS:  # a session setting's flag gives its default itself
        assert args[s.name] == (s.default if s.kind == settings.SESSION else None), s.name


def test_flags_are_read_and_checked_as_the_table_says(capsys):
    config = parse("--seqlen", "12", "--dropout", "0.25", "--schedule", "constant")
    assert (config["seqlen"], config["dropout"], config["schedule"]) == (12, 0.25, "constant")
    assert parse("--validation", "None")["validation"] == []
    assert parse("--no-mixed-precision")["mixed_precision"] is False
    for flag, value in [("--seqlen", "0"), ("--dropout", "1"), ("--seed", str(2**32))]:
        with pytest.raises(SystemExit):
            rnn_train.parse_args([flag, value])
        err = capsys.readouterr().err
        assert f"argument {flag}: must be {settings.BY_NAME[flag[2:]].values.must_be}" in err


def test_recipe_talk_and_what_a_resume_or_a_fine_tuning_may_change():
    talk = parse("--recipe", "talk")
    assert {k: talk[k] for k in settings.TALK_RECIPE} == {
        "learning_rate": 0.001,
        "warmup": 0,
        "schedule": "constant",
        "clip_norm": 0.0,
        "weight_decay": 0.0,
        "dropout": 0.2,
        "char_dropout": 0.2,
        "dropout_from_epoch": 0.0,
        "zero_state_every": 0,
        "output_bias": "zeros",
    }
    assert parse("--recipe", "talk", "--dropout", "0.3")["dropout"] == 0.3  # a flag still wins
    kept = {"cell_size", "layers", "batch_size", "seqlen", "min_char_count"}
    assert set(settings.ARCHITECTURE) == kept
    assert set(settings.INHERITED) == {"cell_size", "layers"}
    saved = dict(settings.DEFAULTS, seqlen=20, epochs=3)
    args = rnn_train.parse_args(["--epochs", "5"])
    assert settings.merge(args, saved)["epochs"] == 5 and saved["seqlen"] == 20
    with pytest.raises(settings.UsageError, match="trained with --seqlen 20, not 30"):
        settings.merge(rnn_train.parse_args(["--seqlen", "30"]), saved)
    parent = dict(settings.DEFAULTS, cell_size=64, layers=2)
    fine_tuned = settings.merge(rnn_train.parse_args([]), parent=parent)
    assert (fine_tuned["cell_size"], fine_tuned["layers"]) == (64, 2)
    with pytest.raises(settings.UsageError, match="has --layers 2, not 3"):
        settings.merge(rnn_train.parse_args(["--layers", "3", "--init-from", "p"]), parent=parent)


def test_a_resume_keeps_its_alphabet_s_rule():
    """--min-char-count chose a run's alphabet once: a resume cannot change it (it was
    ignored, and recorded in the checkpoint, which then misdescribed its alphabet)."""
    saved = dict(settings.DEFAULTS, min_char_count=3)
    assert settings.merge(rnn_train.parse_args(["--min-char-count", "3"]), saved)
    with pytest.raises(settings.UsageError, match="trained with --min-char-count 3, not 5"):
        settings.merge(rnn_train.parse_args(["--min-char-count", "5"]), saved)
    old = {k: v for k, v in settings.DEFAULTS.items() if k != "min_char_count"}
    with pytest.raises(settings.UsageError, match="trained with --min-char-count 2, not 5"):
        settings.merge(rnn_train.parse_args(["--min-char-count", "5"]), old)


def test_batch_size_auto_is_the_talk_s_rows_but_fewer_for_a_big_alphabet_on_a_cpu():
    """Measured on one CPU: 50 rows beat 200 by 0.22 nats/char on a 4,800-symbol text at
    3 minutes, and matched them on Shakespeare's ~100; a GPU runs 200 in the time of 50.
    A resume keeps the rows it was saved with; a number given is kept as it is."""
    assert parse()["batch_size"] == "auto"
    assert settings.auto_batch_size(txtutils.ALPHASIZE) == 200
    assert settings.auto_batch_size(999) == 200 and settings.auto_batch_size(1000) == 50
    assert settings.auto_batch_size(4785, on_gpu=True) == 200
    assert settings.auto_batch_size(4785, replicas=4) == 52  # split evenly over replicas
    assert settings.auto_batch_size(txtutils.ALPHASIZE, replicas=3) == 201
    chosen = settings.with_batch_size(parse(), 4785)
    assert chosen["batch_size"] == 50 and parse()["batch_size"] == "auto"
    assert settings.with_batch_size(parse("--batch-size", "300"), 4785)["batch_size"] == 300
    saved = dict(settings.DEFAULTS, batch_size=50)
    assert settings.merge(rnn_train.parse_args([]), saved)["batch_size"] == 50
    before = {k: v for k, v in settings.DEFAULTS.items() if k != "batch_size"}
    assert settings.merge(rnn_train.parse_args([]), before)["batch_size"] == 200


def test_fine_tuning_trains_on_the_parent_s_text_unless_given_its_own():
    """The advice of a refused resume, "train on this text in a new run with
    --init-from RUN", must train on the run's text, not on Shakespeare."""
    parent = dict(settings.DEFAULTS, data=["mine/*.txt"], validation=["mine/last.txt"])
    child = settings.merge(rnn_train.parse_args(["--init-from", "p"]), parent=parent)
    assert (child["data"], child["validation"]) == (["mine/*.txt"], ["mine/last.txt"])
    args = rnn_train.parse_args(["--init-from", "p", "--data", "new/*.txt"])
    child = settings.merge(args, parent=parent)
    assert (child["data"], child["validation"]) == (["new/*.txt"], None)


@pytest.mark.parametrize("setting", [s for s in settings.SAVED], ids=lambda s: s.name)
def test_a_checkpoint_is_checked_against_the_same_ranges(setting):
    config = dict(settings.DEFAULTS, alphasize=txtutils.ALPHASIZE, alphabet=txtutils.ALPHABET)
    ckpt.check_config(config, "defaults")  # the defaults pass
    bad = {"data": [], "validation": "x.txt", "schedule": "linear", "mixed_precision": "yes"}
    value = bad.get(setting.name, True)  # JSON's true is no number, and no text either
    if setting.values is settings.true_or_false:
        value = "true"
    with pytest.raises(ckpt.CheckpointError, match=f"{setting.name} is .* it must be "):
        ckpt.check_config(dict(config, **{setting.name: value}), "crafted")


def readme_flag_rows():
    """{flag: the default its row gives} of the table of rnn_train.py's flags in
    docs/training.md (None for the flags of a row that names several)."""
    with open(os.path.join(HERE, "docs", "training.md"), encoding="utf-8") as f:
        page = f.read()
    section = page.split("\n## Every flag", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for first, default in re.findall(r"^\| (`--[^|]*) \|([^|]*)\|", section, re.MULTILINE):
        flags = re.findall(r"`(--[a-z-]+)", first)
        rows.update(
            {flag: default.strip().strip("`") if len(flags) == 1 else None for flag in flags}
        )
    return rows


def test_the_docs_give_every_flag_with_its_default():
    rows = readme_flag_rows()
    assert {s.option for s in settings.SETTINGS} | {"--recipe"} == set(rows)
    for s in settings.SETTINGS:
        shown = rows[s.option]
        if shown is None:  # one row for several flags
            continue
        if s.default is None or s.default is False or s.default == "auto":
            unset = {"none", "auto", "", "date and time", "off", "CHECKPOINT_DIR/.text"}
            assert shown in unset, (s.option, shown)
        elif type(s.default) in (int, float):
            assert float(shown) == s.default, (s.option, shown)
        else:
            assert shown == settings.shown(s.default), (s.option, shown)


def test_a_checkpoint_from_before_char_dropout_drops_characters_at_its_dropout():
    """Before --char-dropout, the characters were dropped at --dropout's rate: a resume
    goes on doing so, and a model built from such a config too; a new run does not."""
    assert settings.DEFAULTS["char_dropout"] == 0.0
    old = {k: v for k, v in settings.DEFAULTS.items() if k != "char_dropout"}
    resumed = settings.merge(rnn_train.parse_args([]), dict(old, dropout=0.3))
    assert resumed["char_dropout"] == 0.3
    given = rnn_train.parse_args(["--char-dropout", "0"])
    assert settings.merge(given, dict(old, dropout=0.3))["char_dropout"] == 0.0
    assert build_model(dict(old, alphasize=98, cell_size=8)).char_dropout_rate == old["dropout"]


def test_a_checkpoint_from_before_dropout_from_epoch_keeps_when_its_dropout_started():
    """Checkpoints made before --dropout-from-epoch said when dropout starts as a
    fraction of the run's steps (--dropout-from): a resume starts it at that step, said
    in epochs once the run's length is known; older ones had dropout from the start."""
    old = {k: v for k, v in settings.DEFAULTS.items() if k != "dropout_from_epoch"}
    saved = dict(old, dropout_from=0.25, epochs=8)
    resumed = settings.merge(rnn_train.parse_args([]), saved)
    assert resumed["dropout_from_epoch"] is None  # not known before the text is read
    # a run of 8 epochs: from epoch 2; one cut to 3 epochs by --max-steps: from 0.75
    assert settings.with_old_dropout(resumed, saved, 8)["dropout_from_epoch"] == 2.0
    assert settings.with_old_dropout(resumed, saved, 3)["dropout_from_epoch"] == 0.75
    assert settings.merge(rnn_train.parse_args([]), old)["dropout_from_epoch"] == 0.0
    given = rnn_train.parse_args(["--dropout-from-epoch", "1"])
    merged = settings.merge(given, dict(old, dropout_from=0.25))
    assert settings.with_old_dropout(merged, saved, 8)["dropout_from_epoch"] == 1.0


@pytest.mark.parametrize("flag", ["--run", "--resume"])
@pytest.mark.parametrize(
    "name",
    ["..", ".", "a/b", "/tmp/x", "a\\b", "x:best", "best", "b[12]", "b*", "b?", ".text", "-x"]
    + ["x" * 256],
)
def test_a_run_name_that_is_not_one_folder_is_refused_in_one_line(
    flag, name, tmp_path, monkeypatch, capsys
):
    """--run .. wrote its checkpoints and TensorBoard folders into the folder above
    checkpoints/ and log/; a/b nested a run in another; x:best and best are not the
    names of RUN:best and of a run's best/ folder that they look like; b[12] had
    TensorFlow delete run b1's old checkpoints with its own (it globs their paths);
    .text is the text cache's folder; -x cannot be resumed by name (a flag)."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        rnn_train.main([f"{flag}={name}", "--max-steps", "1"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        f"rnn_train.py: error: argument {flag}: must be {settings.run_name.must_be}, "
        f"got {name} (see --help)\n"
    )
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "flag, value", [("--checkpoint-dir", "runs[1]"), ("--checkpoint-dir", ""), ("--log-dir", "")]
)
def test_a_checkpoint_folder_with_a_glob_character_or_an_empty_folder_is_refused(
    flag, value, tmp_path, monkeypatch, capsys
):
    """An empty folder put the run's folders in the current one; runs[1]/RUN's old
    checkpoints, deleted by a glob, would take runs1/RUN's with them."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exited:
        rnn_train.main([f"{flag}={value}", "--max-steps", "1"])
    assert exited.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"rnn_train.py: error: argument {flag}: must be a folder's path")
    assert os.listdir(tmp_path) == []
