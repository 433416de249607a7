"""Numba kernels. No argument checks here: the API in fastrnn.lstm / fastrnn.rnn does them."""
