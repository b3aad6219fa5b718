"""Evaluations of a catalogue and its policies against public attack benchmarks: what the
policies stop in practice, and what they cost the user's own tasks. Optional: each needs its
benchmark's package (`pip install 'tether[eval]'`), and nothing else in Tether imports them."""
