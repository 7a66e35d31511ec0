"""YAML matrices -> Cases. Every error names the file, the key path, the bad value and what is allowed.

Every key, its type, range and meaning are in the matrix's JSON Schema (matrix.schema.json beside this module;
`llmconform schema` prints it), which config/schema.py checks first; the rules between keys (names that refer to
engines, models and workloads; layouts; model sources that must exist) are checked here and in the section parsers.

```yaml
name: cpu-smoke                    # default: the file's stem
launcher: local                    # local | docker | slurm  (a running server: --llm-url, no matrix)
target: {nodes: 1, gpus_per_node: 8}   # the hardware the matrix is written for (advice in `llmconform plan`)
engines:
  vllm:
    command: [vllm, serve]         # how to start it (a string is split on spaces)
    version: "0.32.0"              # the version its flags are planned for
    device: cpu                    # cuda (default) | cpu
    image: registry/vllm:tag       # container image (docker launcher: required; slurm: optional)
    startup_timeout: 900           # seconds
    args: {dtype: float32}         # extra flags (true -> bare flag, list -> repeated values, mapping -> JSON)
    env: {VLLM_LOGGING_LEVEL: INFO}
models:
  qwen2-tiny:
    source: factory:qwen2-tiny     # factory:NAME | shape:NAME | path:DIR | hf:ORG/NAME
    served_name: qwen2-tiny        # default: the model's key
    args: {max-model-len: 512}
    env: {}
    layouts: [tp1, tp2]            # default: the top-level layouts
    engines: [vllm]                # default: every engine
layouts: [tp1, tp2, pp2]
exclude:                           # drop cases of the product (any subset of engine/model/layout)
  - {engine: vllm, layout: pp2}
cases:                             # explicit cases besides the product
  - {engine: vllm, model: qwen2-tiny, layout: tp2, args: {...}, env: {...}, note: "..."}
  - {engine: vllm, model: qwen2-tiny, layout: pp2, source: path:/ckpt/other}   # other weights as one layout
accuracy: {task: builtin:addition, floor: 0.99}   # the accuracy gate (llmconform/accuracy/gate.py)
```
"""

from __future__ import annotations

import fnmatch
import json
import os
import shlex
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NoReturn

from llmconform import engines, models
from llmconform.config import layout as layouts
from llmconform.config import schema, userfiles
from llmconform.config.accuracy import parse_accuracy_section
from llmconform.config.case import Case, EngineSettings, ModelSpec
from llmconform.config.compare import case_dtype, parse_compare_section
from llmconform.config.floor_rules import parse_floors
from llmconform.config.workloads import parse_workloads
from llmconform.errors import LayoutError, MatrixError, UserError
from llmconform.serving import launchers


@dataclass(frozen=True)
class TargetHardware:
    """The machine a matrix is planned for (`target:`), when it is not the one `llmconform plan` runs on."""

    nodes: int
    gpus_per_node: int


@dataclass
class Matrix:
    name: str
    file: str
    cases: list[Case]
    target: TargetHardware | None = None
    notes: dict[str, str] = field(default_factory=dict)  # case id -> note (e.g. the seed command it reproduces)


class _Reader:
    """Raises the matrix's errors, naming the file; the key path comes with each."""

    def __init__(self, file: str):
        self.file = file

    def fail(self, path: str, problem: str, allowed: str | None = None) -> NoReturn:
        raise MatrixError(self.file, path, problem, allowed)

    def choice(self, value: str, path: str, choices: tuple[str, ...]) -> str:
        """A name that must refer to something the matrix (or a registry) declares."""
        if value not in choices:
            self.fail(path, f"{value!r} is not allowed", ", ".join(choices))
        return value

    def env(self, value: dict) -> dict[str, str]:
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}

    def layout(self, value, path: str) -> layouts.Layout:
        try:
            return layouts.parse(value)
        except LayoutError as error:
            self.fail(path, error.detail, schema.schema()["$defs"]["layout"]["description"])


def load(path: str | Path) -> Matrix:
    path = Path(path)
    file = str(path)
    data = userfiles.read_yaml(path, "a YAML matrix (a mapping with engines and models)")
    return parse(data, file=file, default_name=path.stem)


def select(matrices: list[Matrix], globs: list[str]) -> list[Matrix]:
    """Keep the cases whose id matches one of the globs (`--case 'vllm-qwen2-tiny-tp*'`); every glob must match a
    case, so that a typo does not silently run nothing. No globs: everything."""
    if not globs:
        return matrices
    ids = [case.id for m in matrices for case in m.cases]
    for glob in globs:
        if not any(fnmatch.fnmatchcase(case_id, glob) for case_id in ids):
            raise UserError(f"--case {glob!r} matches none of the cases: {', '.join(ids) or '(none)'}")
    return [replace(m, cases=[c for c in m.cases if any(fnmatch.fnmatchcase(c.id, g) for g in globs)])
            for m in matrices]


def parse(data, file: str = "<matrix>", default_name: str = "matrix") -> Matrix:
    r = _Reader(file)
    schema.check(data, r.fail)
    top = data
    name = top.get("name", default_name)
    launcher = r.choice(top.get("launcher", "local"), "launcher", tuple(launchers.LAUNCHERS))
    target = TargetHardware(**top["target"]) if "target" in top else None
    base_dir = Path(file).parent.resolve() if file != "<matrix>" else Path.cwd()
    engine_settings, engine_extras = _engines(r, top["engines"], base_dir)
    for requirement in launchers.get(launcher).requires:
        for engine_name, settings in engine_settings.items():
            if getattr(settings, requirement.setting) is None:
                r.fail(f"engines.{engine_name}.{requirement.setting}", requirement.why, requirement.allowed)
    model_specs, model_extras = _models(r, top["models"], tuple(engine_settings))
    default_layouts = [r.layout(v, f"layouts[{i}]") for i, v in enumerate(top.get("layouts", []))]
    excludes = [_exclude(r, e, f"exclude[{i}]", engine_settings, model_specs)
                for i, e in enumerate(top.get("exclude", []))]
    workloads = parse_workloads(top.get("workloads"), r.fail)
    floor_list = parse_floors(top.get("floors"), r.fail, workloads)
    compare = top.get("compare")
    compare_section = parse_compare_section(compare, r.fail, tuple(model_specs))
    accuracy_section = parse_accuracy_section(top.get("accuracy"), r.fail, tuple(model_specs), base_dir)

    def build(engine: str, model: str, layout, args=None, env=None, spec: ModelSpec | None = None) -> Case:
        e_args, e_env = engine_extras[engine]
        m = model_extras[model]
        case = Case(engine=engine_settings[engine], model=spec or model_specs[model], layout=layout,
                    launcher=launcher, args={**e_args, **m.args, **(args or {})},
                    env={**e_env, **m.env, **(env or {})}, floors=floor_list, compare=dict(compare or {}),
                    accuracy=accuracy_section, workloads=workloads, matrix=name)
        if compare_section.policy(model, case_dtype(case)).deterministic:
            # `compare.deterministic: true` turns on the engine's own switch; what the matrix sets explicitly wins.
            switch = engines.get(engine).determinism
            if switch:
                case = replace(case, args={**switch.args, **case.args}, env={**switch.env, **case.env})
        return case

    cases: list[Case] = []
    for model_id in model_specs:
        extras = model_extras[model_id]
        for engine in extras.engines or tuple(engine_settings):
            for layout in (extras.layouts if extras.layouts is not None else default_layouts):
                if not any(_excluded(x, engine, model_id, layout) for x in excludes):
                    cases.append(build(engine, model_id, layout))
    notes = {}
    for i, item in enumerate(top.get("cases", [])):
        path = f"cases[{i}]"
        engine = r.choice(item["engine"], f"{path}.engine", tuple(engine_settings))
        model = r.choice(item["model"], f"{path}.model", tuple(model_specs))
        layout = r.layout(item["layout"], f"{path}.layout")
        # `source`: this layout serves other weights under the model's id (a checkpoint under test, or a damaged
        # copy proving that accuracy and equivalence catch it)
        spec = (_model_spec(r, model, item["source"], f"{path}", model_specs[model].served_name)
                if "source" in item else None)
        case = build(engine, model, layout, dict(item.get("args", {})), r.env(item.get("env", {})), spec)
        if "note" in item:
            notes[case.id] = item["note"]
        cases.append(case)
    seen: dict[str, int] = {}
    for case in cases:
        seen[case.id] = seen.get(case.id, 0) + 1
    duplicates = sorted(k for k, n in seen.items() if n > 1)
    if duplicates:
        r.fail("cases", f"case ids must be unique; repeated: {', '.join(duplicates)}",
               "one case per engine, model and layout (give a variant its own model key)")
    if not cases:
        r.fail("layouts", "the matrix expands to no cases", "a non-empty `layouts` list or `cases` entries")
    return Matrix(name=name, file=file, cases=cases, target=target, notes=notes)


def _engines(r: _Reader, value: dict, base_dir: Path):
    settings, extras = {}, {}
    for name, body in value.items():
        path = f"engines.{name}"
        if name not in engines.ENGINES:
            r.fail(path, *schema.unknown_key(name, engines.ENGINES))
        body = {} if body is None else body
        engine = engines.get(name)
        command = body.get("command", list(engine.default_command))
        if isinstance(command, str):
            command = shlex.split(command)
        command = [os.path.expandvars(c) for c in command]
        if "/" in command[0] and not os.path.isabs(command[0]):
            # A relative executable path is relative to the matrix file, wherever pytest runs from.
            command[0] = os.path.normpath(base_dir / command[0])
        settings[name] = EngineSettings(
            name=name, command=tuple(command), version=str(body.get("version", engine.default_version)),
            device=body.get("device", "cuda"), image=body.get("image"),
            startup_timeout_s=float(body.get("startup_timeout", 1800)),
        )
        if settings[name].device == "cpu" and not engine.runs_on_cpu:
            r.fail(f"{path}.device", f"{name} runs on cuda only here", "cuda")
        extras[name] = (dict(body.get("args", {})), r.env(body.get("env", {})))
    return settings, extras


@dataclass(frozen=True)
class _ModelExtras:
    args: dict
    env: dict
    layouts: list | None
    engines: tuple[str, ...]


def _models(r: _Reader, value: dict, engine_names: tuple[str, ...]):
    specs, extras = {}, {}
    for model_id, body in value.items():
        path = f"models.{model_id}"
        specs[model_id] = _model_spec(r, str(model_id), body["source"], path, body.get("served_name"))
        model_layouts = None
        if "layouts" in body:
            model_layouts = [r.layout(v, f"{path}.layouts[{i}]") for i, v in enumerate(body["layouts"])]
        only = tuple(r.choice(e, f"{path}.engines[{i}]", engine_names) for i, e in enumerate(body.get("engines", [])))
        extras[model_id] = _ModelExtras(dict(body.get("args", {})), r.env(body.get("env", {})), model_layouts, only)
    return specs, extras


def _model_spec(r: _Reader, model_id: str, source: str, path: str, served_name) -> ModelSpec:
    kind, _, ref = source.partition(":")
    served = served_name if served_name is not None else model_id
    config, dummy = None, False
    if kind in ("factory", "shape"):
        preset = models.PRESETS.get(ref)
        wanted = kind == "factory"
        if preset is None or preset.weights != wanted:
            names = sorted(p.name for p in models.PRESETS.values() if p.weights == wanted)
            r.fail(f"{path}.source", f"unknown {kind} model {ref!r}", ", ".join(f"{kind}:{n}" for n in names))
        location, config, dummy = str(models.location(ref)), preset.config, kind == "shape"
    elif kind == "path":
        directory = Path(ref).expanduser()
        config_file = directory / "config.json"
        if not config_file.is_file():
            r.fail(f"{path}.source", f"{ref} has no config.json", "a local model directory")
        try:
            config = json.loads(config_file.read_text())
        except json.JSONDecodeError as error:
            r.fail(f"{path}.source", f"{config_file} is not valid JSON: {error}")
        location = str(directory.resolve())
    else:
        known = models.preset_for_hub_id(ref)
        location, config = ref, known.config if known else None
    return ModelSpec(id=model_id, source=source, path=location, served_name=served, config=config,
                     dummy_weights=dummy)


def _exclude(r: _Reader, item, path: str, engine_settings, model_specs) -> dict:
    if not item:
        r.fail(path, "an empty exclude would drop every case", "engine, model and/or layout")
    out: dict = {}
    if "engine" in item:
        out["engine"] = r.choice(item["engine"], f"{path}.engine", tuple(engine_settings))
    if "model" in item:
        out["model"] = r.choice(item["model"], f"{path}.model", tuple(model_specs))
    if "layout" in item:
        out["layout"] = r.layout(item["layout"], f"{path}.layout")
    return out


def _excluded(rule: dict, engine: str, model: str, layout) -> bool:
    return (rule.get("engine", engine) == engine and rule.get("model", model) == model
            and rule.get("layout", layout) == layout)

