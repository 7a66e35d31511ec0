"""OpenAI API conformance helpers: strict response schemas (`schema`), a raw SSE reader (`sse`), error answers
(`errors`), semantic checks (`checks`), the two generation endpoints (`endpoints`), raw requests (`calls`), known
engine deviations (`deviations`) and the suites' `conformance` fixture (`fixture`)."""

# The results property each conformance check records (read by the conformance table and `llmconform compare`).
PROPERTY = "conformance"
