"""What a suite receives from the `llm` fixture: a ready server's address, model, clients and provenance.
Suites never see command lines; they use this."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from llmconform.config.case import Case
from llmconform.progress import Progress
from llmconform.reports.report_dir import ReportDir
from llmconform.serving.server import Server


@dataclass
class LLM:
    base_url: str
    model: str
    engine: str  # "vllm", "sglang", "trtllm", or what --llm-engine names for an attached server
    engine_version: str | None
    report_dir: ReportDir  # where the run's files go: the suites ask it for their paths
    case: Case | None = None  # None in attach mode
    server: Server | None = None  # None in attach mode
    api_key: str | None = None
    extra: dict = field(default_factory=dict)
    progress: Progress = field(default_factory=Progress)  # live lines for the terminal (quiet by default)

    @property
    def id(self) -> str:
        return self.case.id if self.case else f"external-{self.engine}"

    @property
    def layout(self) -> str:
        return str(self.case.layout) if self.case else "external"

    @property
    def logs(self) -> list[Path]:
        return self.server.log_paths if self.server else []

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    @cached_property
    def client(self):
        import openai

        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key=self.api_key or "EMPTY", max_retries=0,
                             timeout=300)

    @cached_property
    def async_client(self):
        import openai

        return openai.AsyncOpenAI(base_url=f"{self.base_url}/v1", api_key=self.api_key or "EMPTY", max_retries=0,
                                  timeout=300)

    @cached_property
    def http(self):
        import httpx

        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=300)
