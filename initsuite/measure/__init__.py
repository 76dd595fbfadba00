"""Taps on layer outputs, in-graph statistics, NaN/Inf forensics, the compiled train/probe/eval steps."""
