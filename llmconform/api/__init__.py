"""OpenAI API conformance helpers: strict response schemas (`schema`), OpenAI's own OpenAPI document (`openapi`), a
raw SSE reader (`sse`), error answers (`error_answers`), semantic checks (`checks`), the two generation endpoints
(`endpoints`), raw requests (`calls`) and the engines' Prometheus counters (`metrics`). The engines' declared
deviations are in llmconform.engines.deviations, the suites' `conformance` fixture in llmconform.pytest."""

# The results property each conformance check records (read by the conformance table and `llmconform compare`).
PROPERTY = "conformance"
