"""One module per figure of bench/README.md: each measures its figure against a running service (a
`tools.service_process.ServiceProcess` from `bench.server.running_service`) or in subprocesses of its own,
and returns the figure with its details; bench/run.py calls them in order."""
