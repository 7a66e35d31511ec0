"""Output equivalence across layouts: the comparators (`comparators`), the fixed probe requests (`probes`), and which
comparator and reference layout apply to a case, where outputs are kept and the equivalence report (`policy`)."""
