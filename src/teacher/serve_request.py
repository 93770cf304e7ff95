"""What the local server accepts at POST /v1/chat/completions, checked as OpenAI checks it.

A body that OpenAI would refuse is refused here with 400 and OpenAI's error shape
({"error": {"message", "type": "invalid_request_error", "param", "code"}}), naming the field. Fields
OpenAI knows but this server cannot honour (tools, logprobs, penalties, non-text content parts) are
refused with 400 when set to anything but their no-op value, never silently ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
)

MAX_N = 16  # choices per request; OpenAI allows 128, a CPU model makes 16 already slow
MAX_STOP = 4  # OpenAI's limit on stop sequences
MAX_BODY_BYTES = 4 * 1024 * 1024  # a bigger body is refused (413) before it is parsed: memory stays bounded
GREEDY_BELOW = 1e-5  # a temperature this close to 0 is greedy (dividing logits by it overflows)
Number = StrictInt | StrictFloat  # JSON numbers; True/False and "0.5" are refused, as OpenAI does


class RequestProblem(ValueError):
    """A bad request: the message, and the field it concerns (OpenAI's `param`)."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.code, self.status = param, code, status

    def body(self) -> dict:
        return {"error": {"message": str(self), "type": "invalid_request_error", "param": self.param,
                          "code": self.code}}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class TextPart(_Strict):
    type: Literal["text"]
    text: StrictStr


class ChatMessage(_Strict):
    role: StrictStr
    content: StrictStr | list[dict] | None = None
    name: StrictStr | None = None


class StreamOptions(_Strict):
    include_usage: StrictBool = False


class ChatBody(_Strict):
    model: StrictStr
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[StrictInt, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[StrictInt, Field(ge=1)] | None = None  # the newer name of max_tokens
    temperature: Annotated[Number, Field(ge=0, le=2)] | None = None
    top_p: Annotated[Number, Field(ge=0, le=1)] | None = None
    n: Annotated[StrictInt, Field(ge=1, le=MAX_N)] | None = None
    stop: StrictStr | Annotated[list[StrictStr], Field(max_length=MAX_STOP)] | None = None
    seed: Annotated[StrictInt, Field(ge=-(2 ** 63), le=2 ** 63 - 1)] | None = None
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    user: StrictStr | None = None  # metadata: accepted, not used
    # Known to OpenAI, honoured here only at their no-op value (checked in _unsupported).
    frequency_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    presence_penalty: Annotated[Number, Field(ge=-2, le=2)] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[StrictInt, Field(ge=0, le=20)] | None = None
    logit_bias: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    parallel_tool_calls: StrictBool | None = None


@dataclass(frozen=True)
class ChatJob:
    """A checked request: conversations in the project's {role, content} shape, and its settings."""

    messages: tuple[dict, ...]
    max_tokens: int | None  # None: the server's default
    temperature: float
    top_p: float
    n: int
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool


BRANCH_NAMES = {"str", "int", "float", "bool", "dict", "list", "none"}


def _param(loc: tuple) -> str:
    """pydantic's error location as OpenAI names a param: messages[0].content."""
    name = ""
    for part in loc:
        if isinstance(part, int):
            name += f"[{part}]"
        elif not name:
            name = str(part)
        elif part in BRANCH_NAMES or "[" in part or "-" in part:
            continue  # the union branch pydantic tried (str, list[str], ...), not a field
        else:
            name += f".{part}"
    return name


def _explain(err: ValidationError) -> RequestProblem:
    errors = err.errors(include_url=False)
    first = errors[0]
    param = _param(tuple(first["loc"]))
    if first["type"] == "extra_forbidden":
        return RequestProblem(f"Unrecognized request argument supplied: {param}", param, "unknown_parameter")
    if first["type"] == "missing":
        return RequestProblem(f"Missing required parameter: '{param}'.", param, "missing_required_parameter")
    value = first.get("input")
    shown = json.dumps(value)[:80] if _jsonable(value) else repr(value)[:80]
    # a union's branches each add a complaint about the same param: "a string, or a list"
    reasons = list(dict.fromkeys(e["msg"] for e in errors if _param(tuple(e["loc"])) == param))
    return RequestProblem(f"Invalid value for '{param}': {shown}: {'; or '.join(reasons)}.", param, "invalid_value")


def _jsonable(value) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def _content_text(content, where: str) -> str:
    if isinstance(content, str):
        return content
    if content is None:
        raise RequestProblem(f"Invalid value for '{where}': null: content is required (tool calls are not "
                             "supported by this server).", where, "invalid_value")
    texts = []
    for i, part in enumerate(content):
        kind = part.get("type")
        if kind != "text":
            raise RequestProblem(f"Invalid value for '{where}[{i}].type': {json.dumps(kind)[:40]}: only 'text' "
                                 "content parts are supported (this server serves a text-only model).",
                                 f"{where}[{i}].type", "unsupported_content_type")
        try:
            texts.append(TextPart.model_validate(part).text)
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            field = f"{where}[{i}]" + "".join(f".{p}" for p in first["loc"])
            raise RequestProblem(f"Invalid value for '{field}': {first['msg']}.", field, "invalid_value") from err
    return "\n".join(texts)  # several text parts read as one text, one part a line (as vLLM joins them)


def _unsupported(body: ChatBody) -> None:
    noop = {"frequency_penalty": (None, 0), "presence_penalty": (None, 0), "logprobs": (None, False),
            "top_logprobs": (None, 0), "logit_bias": (None, {}), "tools": (None, []),
            "tool_choice": (None, "none"), "parallel_tool_calls": (None, True, False)}
    for name, allowed in noop.items():
        if getattr(body, name) not in allowed:
            raise RequestProblem(f"'{name}' is not supported by this server (only {allowed[-1]!r}).", name,
                                 "unsupported_parameter")
    fmt = body.response_format
    if fmt is not None and fmt != {"type": "text"}:
        raise RequestProblem("'response_format' is not supported by this server (only {'type': 'text'}).",
                             "response_format", "unsupported_parameter")
    if body.stream_options is not None and not body.stream:
        raise RequestProblem("'stream_options' is only allowed when 'stream' is true.", "stream_options",
                             "invalid_value")
    if body.max_tokens is not None and body.max_completion_tokens is not None:
        raise RequestProblem("Give 'max_tokens' or 'max_completion_tokens', not both.", "max_completion_tokens",
                             "invalid_value")


def parse_chat_body(raw: bytes) -> ChatJob:
    """The checked request, or RequestProblem saying what is wrong and where."""
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:
        raise RequestProblem(f"We could not parse the JSON body of your request: {err}", None,
                             "invalid_json") from err
    if not isinstance(data, dict):
        raise RequestProblem("The request body must be a JSON object.", None, "invalid_json")
    try:
        body = ChatBody.model_validate(data)
    except ValidationError as err:
        raise _explain(err) from err
    except RecursionError as err:
        raise RequestProblem("The request body is nested too deeply.", None, "invalid_json") from err
    _unsupported(body)
    messages = []
    for i, message in enumerate(body.messages):
        if message.role not in ROLES:
            raise RequestProblem(f"Invalid value for 'messages[{i}].role': {json.dumps(message.role)[:40]}: "
                                 f"supported roles are {sorted(ROLES)} (tool messages are not supported).",
                                 f"messages[{i}].role", "invalid_value")
        messages.append({"role": ROLES[message.role], "content": _content_text(message.content,
                                                                                f"messages[{i}].content")})
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    if any(not s for s in stop):
        raise RequestProblem("Invalid value for 'stop': a stop sequence must not be empty.", "stop", "invalid_value")
    # Absent temperature is greedy here (OpenAI's default is 1): a teacher or judge should repeat itself.
    temperature = 0.0 if body.temperature is None else float(body.temperature)
    return ChatJob(messages=tuple(messages), max_tokens=body.max_tokens or body.max_completion_tokens,
                   temperature=0.0 if temperature < GREEDY_BELOW else temperature,
                   top_p=1.0 if body.top_p is None else float(body.top_p), n=body.n or 1, stop=stop,
                   seed=body.seed, stream=bool(body.stream),
                   include_usage=bool(body.stream_options and body.stream_options.include_usage))


def _no_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")

