"""`make bench`: throughput, latency, memory, state and recovery of the engine against baselines."""
