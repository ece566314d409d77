"""What an analysis is: kinds and parameters, the segment loop, one class per kind, prompts, answer parsing.

Framework-free; imports `video`, `model`, `config` and `cancellation` only.
"""
