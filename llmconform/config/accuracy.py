"""The matrix's `accuracy:` section: the accuracy gate's settings and per-model overrides (keys, types and ranges: the
matrix schema's `accuracy`). The gate itself, and what each setting means, is llmconform.accuracy.gate.

```yaml
accuracy:
  task: builtin:addition       # or a JSONL task file, relative to the matrix file
  floor: 0.99                  # the lowest accuracy a layout may have
  min_detectable_drop: 0.05    # the smallest drop against the reference layout to detect ...
  alpha: 0.05                  # ... with this false-alarm probability
  power: 0.8                   # ... and this probability of detecting it (they size the run)
  models: {qwen3moe-oracle: {floor: 0.95}}
```
"""

from __future__ import annotations

from pathlib import Path

from llmconform.config import schema


def parse_accuracy_section(value, fail, model_ids: tuple[str, ...] | None = None,
                           base_dir: Path | None = None) -> dict:
    """Validate a matrix's `accuracy:` section (the gate settings, and `models: {ID: {...}}` overrides; keys, types
    and ranges: the matrix schema's `accuracy`; here the model ids); `fail(path, problem, allowed)` raises. Returns
    it as a plain mapping (cases carry it), with task files made absolute: a relative one is relative to
    `base_dir`, the matrix file's directory."""
    if value is None:
        return {}
    schema.check(value, fail, "accuracy", "accuracy")
    per_model = value.get("models", {})
    for model_id in per_model:
        if model_ids is not None and model_id not in model_ids:
            fail(f"accuracy.models.{model_id}", "not a model of this matrix", ", ".join(model_ids))
    return {**_resolved(value, base_dir),
            "models": {m: _resolved(body, base_dir) for m, body in per_model.items()}}


def _resolved(settings: dict, base_dir: Path | None) -> dict:
    task = settings.get("task")
    if task is None or task.startswith("builtin:") or base_dir is None:
        return dict(settings)
    return {**settings, "task": str(base_dir / Path(task).expanduser())}
