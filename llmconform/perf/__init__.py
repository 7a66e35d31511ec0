"""Performance: the load generator (`loadgen`), its metrics with vLLM's definitions (`load_metrics`), throughput
floors (`floors`), goodput capacity (`capacity`), the standalone bench commands (`bench`) and noise-aware perf
verdicts between two runs (`compare_runs`)."""
