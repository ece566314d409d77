"""One module per figure of bench/README.md: each measures its figure against a running `bench.server.Server`
(or in subprocesses of its own) and returns the figure with its details; bench/run.py calls them in order."""
