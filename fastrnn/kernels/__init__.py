"""Numba kernels. No argument checks here: the API in fastrnn.lstm, fastrnn.rnn and
fastrnn.gru has checked the shapes and made every array C-contiguous and of one float
dtype.

Layouts. The batch arrives sorted by length, longest first, so the sequences still running
at step t are the prefix ``[0, active[t])``. Per-step values (inputs, gates, what the
training forward keeps for the backward) are stored in "packed rows", time-major like
PyTorch's PackedSequence: step t of sequence n is row ``offsets[t] + n`` of an (R, .)
array, R the sum of the lengths, offsets[t] the number of real steps before t. No memory
or work goes to padding, and the rows one step reads are adjacent: with sequence-major
rows the cell loop missed the caches on every row and two threads ran no faster than one.
"""
