"""A loopback mock of the Anthropic Messages API, for tests that drive the real Claude Code CLI.

Owns: `POST /v1/messages` (SSE when the request says `stream: true`, one JSON message for the
`stream: false` fallback Claude Code sends after a broken stream), `/v1/messages/count_tokens`,
`HEAD /api/hello`, a script of answers consumed one per request, and a log of every request.
Must not: listen anywhere but 127.0.0.1, or need anything outside the standard library.

The script is a list of steps; request N gets step N, and past the end `default` (a short
text). Step kinds (the ones the lab in shared notes used, re-written here so the tests need
nothing outside the repository):

    {"kind": "message", "text": "..."}                        end_turn
    {"kind": "bash", "command": "...", "text": "optional"}    a Bash tool_use (stop_reason tool_use)
    {"kind": "tool", "name": "Write", "input": {...}}         any tool_use
    {"kind": "hang"}                                          no answer at all, until `release()`
    {"kind": "error", "status": 429, "type": "rate_limit_error", "message": "...", "headers": {}}

Run in-process (`MockAnthropic().start()`, then `.url`, `.requests`, `.stop()`), or as a
program: `python tests/mock_anthropic_server.py --port 0 --script s.json --port-file p.txt`.
"""
import argparse
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional

DEFAULT_STEP = {"kind": "message", "text": "done"}
USAGE = {"input_tokens": 100, "output_tokens": 20, "cache_creation_input_tokens": 0,
         "cache_read_input_tokens": 0}


def _blocks(step: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The content blocks an answer holds, and (implicitly) its stop reason."""
    kind = step.get("kind", "message")
    blocks: List[Dict[str, Any]] = []
    if kind == "message":
        blocks.append({"type": "text", "text": str(step.get("text", "done"))})
    elif kind in ("bash", "tool"):
        if step.get("text"):
            blocks.append({"type": "text", "text": str(step["text"])})
        if kind == "bash":
            tool_input = {"command": step["command"]}
            if step.get("timeout_ms"):
                tool_input["timeout"] = int(step["timeout_ms"])
            name = "Bash"
        else:
            tool_input, name = dict(step.get("input") or {}), str(step["name"])
        blocks.append({"type": "tool_use", "id": "toolu_" + uuid.uuid4().hex[:24], "name": name,
                       "input": tool_input})
    else:
        raise ValueError(f"not an answer step: {kind}")
    return blocks


def _message(step: Dict[str, Any], model: str) -> Dict[str, Any]:
    blocks = _blocks(step)
    stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
    return {"id": "msg_mock_" + uuid.uuid4().hex[:20], "type": "message", "role": "assistant",
            "model": model, "content": blocks, "stop_reason": stop, "stop_sequence": None,
            "usage": dict(USAGE)}


def _sse(message: Dict[str, Any]) -> bytes:
    """The message as Anthropic's event stream."""
    events = []
    start = dict(message, content=[], stop_reason=None, usage=dict(USAGE, output_tokens=1))
    events.append(("message_start", {"type": "message_start", "message": start}))
    events.append(("ping", {"type": "ping"}))
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": {"type": "text", "text": ""}}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                   "delta": {"type": "text_delta", "text": block["text"]}}))
        else:
            events.append(("content_block_start", {"type": "content_block_start", "index": index,
                                                   "content_block": dict(block, input={})}))
            events.append(("content_block_delta", {"type": "content_block_delta", "index": index,
                                                   "delta": {"type": "input_json_delta",
                                                             "partial_json": json.dumps(block["input"])}}))
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(("message_delta", {"type": "message_delta",
                                     "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
                                     "usage": {"output_tokens": USAGE["output_tokens"]}}))
    events.append(("message_stop", {"type": "message_stop"}))
    return b"".join(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in events)


class MockAnthropic:
    """The server, its script and its request log. Thread-safe; one instance per test."""

    def __init__(self, script: Optional[List[Dict[str, Any]]] = None, port: int = 0,
                 default: Optional[Dict[str, Any]] = None):
        self.script = list(script or [])
        self.default = dict(default or DEFAULT_STEP)
        self.requests: List[Dict[str, Any]] = []
        self._lock = threading.Lock()
        self._released = threading.Event()
        self._next = 0
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self._thread: Optional[threading.Thread] = None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def set_script(self, script: List[Dict[str, Any]]) -> None:
        with self._lock:
            self.script, self._next = list(script), 0

    def release(self) -> None:
        """End every `hang` (they close their connection without an answer)."""
        self._released.set()

    def start(self) -> "MockAnthropic":
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> "MockAnthropic":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def message_requests(self) -> List[Dict[str, Any]]:
        with self._lock:
            return [r for r in self.requests if r["path"].startswith("/v1/messages")
                    and "count_tokens" not in r["path"]]

    def _take(self) -> Dict[str, Any]:
        with self._lock:
            step = self.script[self._next] if self._next < len(self.script) else self.default
            self._next += 1
            return step

    def _handler(self):
        mock = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                self._json(200, {"ok": True})

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                record = {"t": time.time(), "path": self.path, "headers": dict(self.headers),
                          "stream": bool(body.get("stream")), "model": body.get("model"), "body": body}
                with mock._lock:
                    mock.requests.append(record)
                if "count_tokens" in self.path:
                    self._json(200, {"input_tokens": 100})
                    return
                if not self.path.startswith("/v1/messages"):
                    self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}})
                    return
                step = mock._take()
                kind = step.get("kind", "message")
                if kind == "hang":
                    mock._released.wait()
                    self.close_connection = True
                    return
                if kind == "error":
                    status = int(step.get("status", 500))
                    self._json(status, {"type": "error", "error": {
                        "type": step.get("type", "api_error"), "message": step.get("message", f"mock {status}")}},
                        headers=step.get("headers") or {})
                    return
                message = _message(step, body.get("model") or "claude-mock")
                if body.get("stream"):
                    data = _sse(message)
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Content-Length", str(len(data)))
                    self.send_header("request-id", "req_mock_" + uuid.uuid4().hex[:12])
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                else:
                    self._json(200, message)

            def _json(self, status: int, data: Any, headers: Optional[Dict[str, str]] = None) -> None:
                payload = json.dumps(data).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("request-id", "req_mock_" + uuid.uuid4().hex[:12])
                for key, value in (headers or {}).items():
                    self.send_header(key, str(value))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--script", help="a JSON list of steps")
    parser.add_argument("--port-file")
    args = parser.parse_args()
    script = json.load(open(args.script)) if args.script else []
    mock = MockAnthropic(script, port=args.port).start()
    if args.port_file:
        with open(args.port_file, "w") as handle:
            handle.write(str(mock.port))
    print(mock.url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        mock.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
