# Each target sets up what it needs: the virtual env, the requirements, the corpus.
#   make train [ARGS="--flags"]   make play [ARGS="..."]   make export ARGS="RUN DIR"
#   make web [ARGS="RUN"]   (a run's page, the newest run's by default, exported unless it
#   is already, on http://127.0.0.1:8000)
#   make tensorboard   make test   make bench   make bench-export ARGS="RUN TEXT DIR"
#   make bench-quality [ARGS="--minutes 5 15"]   (held-out loss per minute, against Keras; English, Chinese)
#   make gpu-check   (after installing TensorFlow's CUDA build: docs/gpu.md)
#   make corpus (Shakespeare, into shakespeare/)   make corpus-zh (Chinese, into
#   fortunes-zh/: Debian's fortunes-zh 2.98; the tests train on it, so make test fetches it)
#   make litertjs (the web page's runtime, LiteRT.js, into .litertjs/; an export that writes
#   a page fetches it itself, make test first)   make bench-web [ARGS="RUN"] (the page's speed)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ARGS ?=

.PHONY: venv corpus corpus-zh litertjs train play export web tensorboard test bench bench-export \
	bench-quality bench-web gpu-check

$(VENV)/.installed: requirements.txt
	$(PY) -m pip --version >/dev/null 2>&1 || $(PYTHON) -m venv --clear $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

venv: $(VENV)/.installed

corpus: venv
	$(PY) fetch_corpus.py shakespeare

corpus-zh: venv
	$(PY) fetch_corpus.py fortunes-zh

litertjs: venv
	$(PY) -m charrnn.litertjs

# Shakespeare is fetched unless ARGS name the text (--data) or a checkpoint that names
# it (--resume, --init-from): your own text trains, resumes and fine-tunes offline
train: $(if $(findstring --data,$(ARGS))$(findstring --resume,$(ARGS))$(findstring --init-from,$(ARGS)),venv,corpus)
	$(PY) rnn_train.py $(ARGS)

play: venv
	$(PY) rnn_play.py $(ARGS)

# rnn_export.py fetches the page's runtime when it writes a page (not with --no-web)
export: venv
	$(PY) rnn_export.py $(ARGS)

# ARGS="RUN" (default: the newest run): exported into export/RUN-ckpt-N/ once per
# checkpoint, its web/ served
web: venv
	$(PY) rnn_export.py $(ARGS) --serve

tensorboard: venv
	$(VENV)/bin/tensorboard --logdir log --host 127.0.0.1 --port 6006

# pytest on 2 workers (pytest-xdist): the machines have 2 cores, and most tests wait
# on one process at a time. worksteal: each worker starts on half of the tests in
# order (a file's module fixtures are made once, mostly) and takes from the other's
# end when it runs out, so that both finish together (with a file a worker, one
# file of a few slow tests kept the other idle for 1.5 minutes at the end).
# ARGS="-n 0" runs every test in one process.
test: venv corpus-zh litertjs
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) -m pytest -n 2 --dist worksteal $(ARGS)

bench: venv
	$(PY) -m tools.bench $(ARGS)

bench-quality: corpus corpus-zh
	$(PY) -m tools.bench_quality $(ARGS)

bench-export: venv
	$(PY) -m tools.bench_export $(ARGS)

bench-web: litertjs
	$(PY) -m tools.bench_web $(ARGS)

gpu-check: venv
	$(PY) -m tools.gpu_check $(ARGS)
