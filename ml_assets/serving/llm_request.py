"""What an LLM request may say, checked by the gateway before vLLM sees it: the fields the
gateway relies on or that could hurt a shared server; vLLM checks the rest (its 400s pass
through). No Dagster, no vLLM imports."""

from __future__ import annotations

from typing import Any

from ml_assets.serving.request import ROUTE_PREFIX, RequestError, _shown

COMPLETIONS, CHAT = "completions", "chat/completions"
ENDPOINTS = (COMPLETIONS, CHAT)
MAX_PROMPTS = 16  # a list prompt is a batch: one request must not fill a shared server
MAX_N = 8
ROLES = {"system", "developer", "user", "assistant", "tool"}


def llm_target(path: str) -> tuple[str, str]:
    """(tenant, endpoint) of /v1/{tenant}/llm/completions or /v1/{tenant}/llm/chat/completions;
    RequestError 404 for any other path."""
    parts = path.strip("/").split("/")
    if len(parts) >= 4 and parts[0] == ROUTE_PREFIX.strip("/") and parts[2] == "llm":
        endpoint = "/".join(parts[3:])
        if endpoint in ENDPOINTS:
            return parts[1], endpoint
    raise RequestError(404, "no such route: POST /v1/{tenant}/llm/completions or "
                            "/v1/{tenant}/llm/chat/completions")


def _int_field(body: dict, name: str, low: int, high: int) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(422, f"{name} must be an integer, got {_shown(value)}")
    if not low <= value <= high:
        raise RequestError(422, f"{name} must be between {low} and {high} (the served model's "
                                f"context length bounds it), got {value}")


def _check_prompt(prompt: Any) -> None:
    if isinstance(prompt, str):
        if not prompt:
            raise RequestError(422, "prompt must not be empty")
        return
    if isinstance(prompt, list) and prompt:
        if len(prompt) > MAX_PROMPTS:
            raise RequestError(422, f"prompt: at most {MAX_PROMPTS} prompts in one request")
        if all(isinstance(p, str) and p for p in prompt):
            return
        if all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt):
            return  # one prompt given as token ids
    raise RequestError(422, "prompt must be a non-empty string, a list of non-empty strings or "
                            f"a list of token ids, got {_shown(prompt)}")


def _check_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise RequestError(422, f"messages must be a non-empty list, got {_shown(messages)}")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RequestError(422, f"messages[{i}] must be an object, got {_shown(message)}")
        if message.get("role") not in ROLES:
            raise RequestError(422, f"messages[{i}].role must be one of {sorted(ROLES)}, got "
                                    f"{_shown(message.get('role'))}")
        content = message.get("content")
        if not (content is None or isinstance(content, str | list)):
            raise RequestError(422, f"messages[{i}].content must be a string or a list of "
                                    f"parts, got {_shown(content)}")


def validate(body: Any, endpoint: str, tenant_model: str, served_model: str,
             max_model_len: int) -> dict:
    """The body to forward: checked, `model` set to the served one. 404 naming `model` when it
    names another model (another tenant's included)."""
    if not isinstance(body, dict):
        raise RequestError(422, f"body must be a JSON object, got {_shown(body)}")
    model = body.get("model")
    if model is not None and model not in (tenant_model, served_model):
        raise RequestError(404, f"model {_shown(model)} is not served on this route: use "
                                f"{tenant_model!r} (now {served_model!r}) or leave it out")
    if endpoint == COMPLETIONS:
        if "prompt" not in body:
            raise RequestError(422, "prompt is required")
        _check_prompt(body["prompt"])
    else:
        if "messages" not in body:
            raise RequestError(422, "messages is required")
        _check_messages(body["messages"])
    for name in ("max_tokens", "max_completion_tokens"):
        _int_field(body, name, 1, max_model_len)
    _int_field(body, "n", 1, MAX_N)
    if not isinstance(body.get("stream", False), bool):
        raise RequestError(422, f"stream must be true or false, got {_shown(body['stream'])}")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise RequestError(422, f"stream_options must be an object, got {_shown(options)}")
    return {**body, "model": served_model}


def prompt_chars(body: dict) -> int:
    """The prompt's size in characters (token-id prompts count their ids)."""
    if "messages" in body:
        return sum(len(m["content"]) if isinstance(m.get("content"), str)
                   else len(str(m.get("content") or "")) for m in body["messages"])
    prompt = body.get("prompt", "")
    return len(prompt) if isinstance(prompt, str) else sum(
        len(p) if isinstance(p, str) else 1 for p in prompt)
