"""The libraries that rnn_train.py, rnn_play.py and rnn_export.py share."""
