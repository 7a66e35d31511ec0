"""The pytest side: the plugin (options, markers, fixtures, the session's hooks) and the `conformance` fixture of the
OpenAI suites."""
