"""What a run leaves behind and what is read from it: the report dir and its results, the report sections
(conformance, equivalence, perf), the terminal verdict, what the run ran on, and the
run-to-run regression gate (`llmconform compare`) with its HTML page."""
