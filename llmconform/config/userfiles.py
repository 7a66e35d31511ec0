"""Reading files a user hands us (matrices, deviation lists, earlier runs' results): every way such a file can be
wrong (missing, a folder, binary, empty, not YAML/JSON, truncated) becomes a UserError that names the file and what
was expected, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from llmconform.errors import UserError


def read_text(path: Path, what: str) -> str:
    if path.is_dir():
        raise UserError(f"{path}: is a folder, expected {what}")
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (expected {what})") from None
    except UnicodeDecodeError as error:
        raise UserError(f"{path}: not a text file (byte {error.start} is not UTF-8); expected {what}") from None
    except OSError as error:
        raise UserError(f"{path}: cannot read it ({error.strerror}); expected {what}") from None


def read_yaml(path: Path, what: str):
    """The parsed YAML of a non-empty file."""
    text = read_text(path, what)
    if not text.strip():
        raise UserError(f"{path}: empty file; expected {what}")
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UserError(f"{path}: not valid YAML{where}: {getattr(error, 'problem', None) or error}; expected "
                        f"{what}") from None
    if data is None:
        raise UserError(f"{path}: empty file (only comments); expected {what}")
    return data


def read_json(path: Path, what: str):
    text = read_text(path, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise UserError(f"{path}: not valid JSON at line {error.lineno}, column {error.colno} ({error.msg}); "
                        f"truncated, or not {what}") from None


def read_json_lines(path: Path, what: str) -> list:
    records = []
    for number, line in enumerate(read_text(path, what).splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise UserError(f"{path}: line {number} is not valid JSON ({error.msg}); truncated, or not {what}") \
                from None
    return records
