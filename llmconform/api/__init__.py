"""OpenAI API conformance helpers: strict response schemas (`schema`), a raw SSE reader (`sse`), error answers
(`errors`), semantic checks (`checks`), the two generation endpoints (`endpoints`), raw requests (`calls`), known
engine deviations (`deviations`) and the suites' `conformance` fixture (`fixture`)."""
