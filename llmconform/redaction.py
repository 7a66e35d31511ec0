"""Secrets (API keys, tokens) stay out of everything the framework writes or prints: server.json, `llmconform plan`,
launcher command lines. Engines get them through the environment where they read it (vLLM: VLLM_API_KEY), which
other users cannot read (/proc/PID/environ is private), unlike argv (`ps`)."""

from __future__ import annotations

import re

REDACTED = "***"
# Flags whose value is a secret, in any spelling (--api-key, --api_key); env names that hold one.
SECRET_FLAG = re.compile(r"^--?(api[-_]key|hf[-_]token|token|password)$", re.IGNORECASE)
SECRET_ENV = re.compile(r"(^|_)(API_KEY|TOKEN|SECRET|PASSWORD)$", re.IGNORECASE)


def is_secret_env(name: str) -> bool:
    return bool(SECRET_ENV.search(name))


def redact_env(env: dict[str, str]) -> dict[str, str]:
    return {k: REDACTED if is_secret_env(k) else v for k, v in env.items()}


def redact_argv(argv) -> list[str]:
    """`--api-key K` and `--api-key=K` with K masked."""
    out: list[str] = []
    hide_next = False
    for item in argv:
        flag, eq, _ = item.partition("=")
        if hide_next:
            out.append(REDACTED)
        elif eq and SECRET_FLAG.match(flag):
            out.append(f"{flag}={REDACTED}")
        else:
            out.append(item)
        hide_next = bool(SECRET_FLAG.match(item))
    return out


def split_secret_env(env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(plain, secret): launchers put the plain part on their command line and pass the secret part through the
    environment of the process they start."""
    secret = {k: v for k, v in env.items() if is_secret_env(k)}
    return {k: v for k, v in env.items() if k not in secret}, secret
