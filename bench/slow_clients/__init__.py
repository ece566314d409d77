"""The parts of bench/experiment_slow_clients.py: the set-ups it serves with (`setups`), the hostile
connections (`attack`) and the probes whose answers it measures (`probes`)."""
