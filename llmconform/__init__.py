"""llmconform: conformance, equivalence and performance tests for LLM serving engines."""

__version__ = "0.1.0"
