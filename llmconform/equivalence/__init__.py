"""Output equivalence across layouts: the comparators (`comparators`), the fixed probe requests (`probes`), and which
comparator and reference layout apply to a case and where outputs are kept (`policy`). Its report section is
llmconform.reports.equivalence_section."""
