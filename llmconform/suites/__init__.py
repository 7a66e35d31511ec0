"""The suites users run against engines, shipped with the package: `pytest --pyargs llmconform.suites --matrix M.yaml`
from any directory (one suite: `--pyargs llmconform.suites.test_equivalence`). They receive ready servers through the
plugin's `llm` fixture and never build command lines."""
