"""A scripted loopback stand-in for the Gemini API, for driving the real Gemini CLI 0.61.0.

Owns: the endpoints the CLI calls (`POST /v1beta/models/<m>:streamGenerateContent?alt=sse`
for every model turn; `:generateContent` for the `-m auto` router and `--list-sessions`
summaries; `:countTokens` and `GET /v1beta/models`, never seen but answered), a script of steps
for the streamed turns, and a log of every request. Must not: bind anything but 127.0.0.1, or
outlive its `with` block (a hung request is released when the server closes).

Standard library only (adapted from the lab notes' mock, shared/notes/gemini-cli/). Each
streamGenerateContent request consumes one step; past the end the last step repeats, and an
empty script answers with a default final message. Step kinds (a step is a dict):

    {"message": "text", "chunks": 1}     final text, split over `chunks` SSE events, finishReason STOP
    {"shell": "cmd", "description": ""}  a run_shell_command functionCall (id call_<hex>)
    {"http_error": 429|500|400, "message": "...", "status": "RESOURCE_EXHAUSTED", "details": [...]}
                                         an HTTP error with Google's JSON error body
    {"hang": true}                       accepts the request and never answers (until close)
    {"drop": true}                       one text chunk, then EOF without a finishReason

Every step may carry "usage": {"prompt": 100, "candidates": 20}.

    with MockGeminiServer([{"shell": "echo hi"}, {"message": "done"}]) as srv:
        srv.base_url       # http://127.0.0.1:PORT (GOOGLE_GEMINI_BASE_URL: no /v1beta)
        srv.requests       # [{"n", "method", "path", "body", "step_index", "step_kind"}]
        srv.turn_requests()  # only the streamGenerateContent ones
"""
from __future__ import annotations

import http.server
import json
import re
import threading
import uuid
from typing import Any, Dict, List, Optional

__all__ = ["MockGeminiServer", "DEFAULT_FINAL_MESSAGE", "STEP_KINDS"]

DEFAULT_FINAL_MESSAGE = "Done (mock default final message)."
STEP_KINDS = ("http_error", "hang", "drop", "shell", "message")  # checked in this order
MAX_HANG_SECONDS = 600.0
_STATUS_NAMES = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}
_DEFAULT_MESSAGES = {429: "Resource has been exhausted (e.g. check quota).",
                     500: "mock internal error", 400: "Request contains an invalid argument.",
                     401: "API key not valid. Please pass a valid API key.",
                     403: "Permission denied.", 503: "The model is overloaded. Please try again later."}
_MODEL_PATH = re.compile(r"^/v1beta/models/([^/:?]+):(\w+)")


def step_kind(step: Dict[str, Any]) -> str:
    for kind in STEP_KINDS:
        if kind in step:
            return kind
    raise ValueError(f"unknown step {step!r}; expected one of {STEP_KINDS}")


def _usage(step: Dict[str, Any]) -> Dict[str, int]:
    usage = step.get("usage") or {}
    prompt, candidates = int(usage.get("prompt", 100)), int(usage.get("candidates", 20))
    return {"promptTokenCount": prompt, "candidatesTokenCount": candidates,
            "totalTokenCount": prompt + candidates}


def _chunk(parts: List[Dict[str, Any]], model: str, finish: bool, usage: Dict[str, int]) -> Dict[str, Any]:
    candidate: Dict[str, Any] = {"index": 0, "content": {"role": "model", "parts": parts}}
    if finish:
        candidate["finishReason"] = "STOP"
    return {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model,
            "responseId": f"resp_{uuid.uuid4().hex[:12]}"}


def _fill_schema(schema: Any) -> Any:
    """Some value matching a JSON schema (the router's classifier asks for one)."""
    if not isinstance(schema, dict):
        return "mock"
    kind = schema.get("type")
    kind = kind.lower() if isinstance(kind, str) else kind
    if kind == "object" or "properties" in schema:
        return {key: _fill_schema(sub) for key, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [_fill_schema(schema.get("items"))]
    if kind in ("integer", "number"):
        return 10
    if kind == "boolean":
        return False
    if schema.get("enum"):
        return schema["enum"][0]
    return "mock"


class MockGeminiServer:
    def __init__(self, script: Optional[List[Dict[str, Any]]] = None):
        self.script = list(script or [])
        for step in self.script:
            step_kind(step)
        self.requests: List[Dict[str, Any]] = []
        self._turns = 0
        self._model_scripts: Dict[str, list] = {}  # model -> [steps, next index]
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: Optional[http.server.ThreadingHTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # --- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> "MockGeminiServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        handler = self._handler_class()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.1})
        self._thread.start()

    def close(self) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_script(self, script: List[Dict[str, Any]], model: Optional[str] = None) -> None:
        """A new script, played from its first step; with `model`, only for requests to that
        model (so CLIs run side by side with different `-m` each get their own)."""
        for step in script:
            step_kind(step)
        with self._lock:
            if model is not None:
                self._model_scripts[model] = [list(script), 0]
            else:
                self.script, self._turns = list(script), 0

    def turn_requests(self) -> List[Dict[str, Any]]:
        return [r for r in self.requests if r.get("method_name") == "streamGenerateContent"]

    # --- the script --------------------------------------------------------------------------

    def _next_step(self, model: str):
        with self._lock:
            own = self._model_scripts.get(model)
            if own is not None:
                steps, index = own
                own[1] += 1
                return index, (steps[min(index, len(steps) - 1)] if steps else {"message": DEFAULT_FINAL_MESSAGE})
            index = self._turns
            self._turns += 1
            if not self.script:
                return index, {"message": DEFAULT_FINAL_MESSAGE}
            return index, self.script[min(index, len(self.script) - 1)]

    def _handler_class(self):
        mock = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _body(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    return json.loads(raw) if raw else None
                except ValueError:
                    return None

            def _json(self, status: int, data: Any) -> None:
                payload = json.dumps(data, separators=(",", ":")).encode()  # as Google sends it
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def _record(self, body, **extra) -> Dict[str, Any]:
                entry = {"method": self.command, "path": self.path, "body": body, **extra}
                with mock._lock:
                    entry["n"] = len(mock.requests)
                    mock.requests.append(entry)
                return entry

            def do_GET(self):
                self._record(None)
                self._json(200, {"models": [{"name": "models/gemini-2.5-pro"}]})

            def do_POST(self):
                body = self._body()
                match = _MODEL_PATH.match(self.path)
                model, method = (match.group(1), match.group(2)) if match else ("?", "?")
                if method == "streamGenerateContent":
                    index, step = mock._next_step(model)
                    self._record(body, method_name=method, model=model, step_index=index,
                                 step_kind=step_kind(step))
                    self._stream(step, model)
                    return
                self._record(body, method_name=method, model=model)
                if method == "countTokens":
                    self._json(200, {"totalTokens": 10})
                elif method == "generateContent":
                    config = (body or {}).get("generationConfig") or {}
                    schema = config.get("responseJsonSchema") or config.get("responseSchema")
                    text = json.dumps(_fill_schema(schema)) if schema else "mock"
                    self._json(200, _chunk([{"text": text}], model, True,
                                           {"promptTokenCount": 10, "candidatesTokenCount": 5,
                                            "totalTokenCount": 15}))
                else:
                    self._json(404, {"error": {"code": 404, "message": "not found", "status": "NOT_FOUND"}})

            def _stream(self, step: Dict[str, Any], model: str) -> None:
                kind = step_kind(step)
                if kind == "hang":
                    mock._closing.wait(MAX_HANG_SECONDS)
                    self.close_connection = True
                    return
                if kind == "http_error":
                    code = int(step["http_error"])
                    error = {"code": code, "message": step.get("message") or _DEFAULT_MESSAGES.get(code, "mock error"),
                             "status": step.get("status") or _STATUS_NAMES.get(code, "UNKNOWN")}
                    if step.get("details"):
                        error["details"] = step["details"]
                    self._json(code, {"error": error})
                    return
                usage = _usage(step)
                if kind == "shell":
                    call = {"name": "run_shell_command", "id": f"call_{uuid.uuid4().hex[:10]}",
                            "args": {"command": step["shell"],
                                     "description": step.get("description", "mock shell step")}}
                    events = [_chunk([{"functionCall": call}], model, True, usage)]
                elif kind == "drop":
                    events = [_chunk([{"text": step.get("text", "partial")}], model, False, usage)]
                else:
                    text = str(step["message"])
                    count = max(1, int(step.get("chunks", 1)))
                    size = max(1, -(-len(text) // count))
                    pieces = [text[i:i + size] for i in range(0, len(text), size)] or [""]
                    events = [_chunk([{"text": piece}], model, i == len(pieces) - 1, usage)
                              for i, piece in enumerate(pieces)]
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for event in events:
                        self.wfile.write(b"data: " + json.dumps(event).encode() + b"\r\n\r\n")
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler
