"""A scripted loopback stand-in for the OpenAI Responses API, for driving the real Codex CLI.

Standard library only. Binds 127.0.0.1 on a free port. Each ``POST /v1/responses`` consumes
one step of the script (past the end the last step repeats, or, for an empty script, a default
final message is sent). Step kinds (a step is a dict; its kind is the first of these keys found):

    {"shell": "cmd", "message": "preamble", "reasoning": "summary", "yield_time_ms": 10000}
        a ``function_call`` item named ``exec_command`` with arguments
        ``{"cmd": cmd, "yield_time_ms": ...}``; the optional ``message`` is sent as an assistant
        message before the call, the optional ``reasoning`` as a reasoning item before that.
    {"message": "text", "reasoning": "summary"}
        final assistant message, streamed as ``response.output_text.delta`` events.
    {"slow_message": "text", "seconds": S}
        the text in deltas spread over S seconds, then completed.
    {"hang_before_headers": true}
        accepts the request and never answers (until the server is closed).
    {"stall_after": N}
        sends headers and the first N events of a message response, then goes silent
        (until the server is closed).
    {"http_error": 429|500|400|..., "body": {...}}
        an HTTP error with a JSON body (a default body per status when ``body`` is absent).
        ``{"http_error": 429, "usage_limit": true, "resets_in_seconds": 60}`` or
        ``... "resets_at": <epoch seconds>`` builds the ``usage_limit_reached`` body.
    {"response_failed": "message", "code": "server_error"}
        a ``response.failed`` event after ``response.created``.
    {"drop": true}
        closes the connection without any response.

Every step may also carry ``"usage": {"input_tokens": .., "output_tokens": ..}`` for the
``response.completed`` event (default 100 in, 20 out).

Every request (any method/path) is logged in memory (``srv.requests``) and, when a path is
given, appended to a JSON-lines file: ``{"n", "time", "method", "path", "headers" (lower-cased),
"body" (parsed JSON or None), "body_text" (only when not JSON), "turn_metadata" (the
``x-codex-turn-metadata`` header parsed as JSON, or None), "step_index", "step_kind"}``.

Use:
    with MockModelServer([{"shell": "echo hi > f.txt"}, {"message": "done"}]) as srv:
        srv.base_url      # http://127.0.0.1:PORT/v1
        ...
        srv.requests      # list of dicts as above

CLI for manual use (runs until SIGINT/SIGTERM or --max-seconds):
    python tests/mock_model_server.py --script steps.json --port-file port.txt [--log requests.jsonl]
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence, Union

__all__ = ["MockModelServer", "DEFAULT_FINAL_MESSAGE", "STEP_KINDS"]

DEFAULT_FINAL_MESSAGE = "Done (mock default final message)."
STEP_KINDS = (
    "shell",
    "slow_message",
    "message",
    "hang_before_headers",
    "stall_after",
    "http_error",
    "response_failed",
    "drop",
)
# Upper bound for any "hang"/"stall" step even if close() is never called.
DEFAULT_MAX_HANG_SECONDS = 3600.0


def step_kind(step: Dict[str, Any]) -> str:
    for kind in STEP_KINDS:
        if kind in step:
            return kind
    raise ValueError(f"unknown mock step (no known kind among {STEP_KINDS}): {step!r}")


class _ClientGone(Exception):
    pass


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MockModelServer/1.0"
    sys_version = ""
    server: "_Server"

    # ---- plumbing -------------------------------------------------------------------
    def setup(self) -> None:
        super().setup()
        self.server.owner._register_conn(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.owner._unregister_conn(self.connection)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if self.server.owner.verbose:
            sys.stderr.write("mock_model_server: " + (format % args) + "\n")

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > 0:
            return self.rfile.read(length)
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline(65537)
                if not size_line:
                    break
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # trailers until blank line
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline(65537)
            return b"".join(chunks)
        return b""

    def _send_json(self, status: int, obj: Any, extra_headers: Optional[Dict[str, str]] = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        for k, v in (extra_headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        self.close_connection = True

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.flush()
        self.close_connection = True

    def _event(self, obj: Dict[str, Any]) -> None:
        payload = f"event: {obj['type']}\ndata: {json.dumps(obj)}\n\n".encode()
        try:
            self.wfile.write(payload)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError) as exc:
            raise _ClientGone() from exc

    def _wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False when the server is closing."""
        return not self.server.owner._stop.wait(max(0.0, seconds))

    # ---- HTTP verbs -----------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        self._log_request(b"", None, None)
        if self.path.rstrip("/").endswith("/models"):
            self._send_json(200, {"object": "list", "data": [], "models": []})
        else:
            self._send_json(404, {"error": {"message": f"mock: no GET {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:  # noqa: N802
        body = self._read_body()
        owner = self.server.owner
        if not self.path.split("?")[0].rstrip("/").endswith("/responses"):
            self._log_request(body, None, None)
            self._send_json(404, {"error": {"message": f"mock: no POST {self.path}", "type": "not_found"}})
            return
        index, step = owner._next_step()
        kind = step_kind(step)
        self._log_request(body, index, kind)
        try:
            getattr(self, "_step_" + kind)(step)
        except _ClientGone:
            self.close_connection = True

    # ---- request log ----------------------------------------------------------------
    def _log_request(self, body: bytes, index: Optional[int], kind: Optional[str]) -> None:
        headers = {k.lower(): v for k, v in self.headers.items()}
        parsed: Any = None
        body_text: Optional[str] = None
        if body:
            try:
                parsed = json.loads(body)
            except ValueError:
                body_text = body.decode("utf-8", "replace")[:10000]
        meta: Any = None
        raw_meta = headers.get("x-codex-turn-metadata")
        if raw_meta:
            try:
                meta = json.loads(raw_meta)
            except ValueError:
                meta = None
        entry = {
            "time": time.time(),
            "method": self.command,
            "path": self.path,
            "headers": headers,
            "body": parsed,
            "turn_metadata": meta,
            "step_index": index,
            "step_kind": kind,
        }
        if body_text is not None:
            entry["body_text"] = body_text
        self.server.owner._record(entry)

    # ---- response builders ----------------------------------------------------------
    def _ids(self) -> Dict[str, str]:
        n = self.server.owner._next_id()
        return {"resp": f"resp_mock_{n}", "msg": f"msg_mock_{n}", "fc": f"fc_mock_{n}",
                "call": f"call_mock_{n}", "rs": f"rs_mock_{n}"}

    @staticmethod
    def _usage(step: Dict[str, Any]) -> Dict[str, Any]:
        u = step.get("usage") or {}
        inp = int(u.get("input_tokens", 100))
        out = int(u.get("output_tokens", 20))
        return {
            "input_tokens": inp,
            "input_tokens_details": {"cached_tokens": int(u.get("cached_tokens", 0))},
            "output_tokens": out,
            "output_tokens_details": {"reasoning_tokens": int(u.get("reasoning_tokens", 0))},
            "total_tokens": inp + out,
        }

    @staticmethod
    def _created(resp_id: str) -> Dict[str, Any]:
        return {"type": "response.created",
                "response": {"id": resp_id, "object": "response", "status": "in_progress"}}

    def _completed(self, resp_id: str, step: Dict[str, Any]) -> Dict[str, Any]:
        return {"type": "response.completed",
                "response": {"id": resp_id, "object": "response", "status": "completed",
                             "usage": self._usage(step)}}

    @staticmethod
    def _chunks(text: str, n: int) -> List[str]:
        if not text:
            return [""]
        n = max(1, min(n, len(text)))
        size = -(-len(text) // n)
        return [text[i:i + size] for i in range(0, len(text), size)]

    def _message_events(self, text: str, msg_id: str, output_index: int, deltas: int = 3) -> List[Dict[str, Any]]:
        """Events of one assistant message item; the delta events are in the middle."""
        events: List[Dict[str, Any]] = [{
            "type": "response.output_item.added", "output_index": output_index,
            "item": {"type": "message", "id": msg_id, "role": "assistant", "status": "in_progress",
                     "content": []},
        }]
        for chunk in self._chunks(text, deltas):
            events.append({"type": "response.output_text.delta", "item_id": msg_id,
                           "output_index": output_index, "content_index": 0, "delta": chunk})
        events.append({
            "type": "response.output_item.done", "output_index": output_index,
            "item": {"type": "message", "id": msg_id, "role": "assistant", "status": "completed",
                     "content": [{"type": "output_text", "text": text, "annotations": []}]},
        })
        return events

    @staticmethod
    def _reasoning_events(text: str, rs_id: str, output_index: int) -> List[Dict[str, Any]]:
        item = {"type": "reasoning", "id": rs_id,
                "summary": [{"type": "summary_text", "text": text}]}
        return [
            {"type": "response.output_item.added", "output_index": output_index,
             "item": {"type": "reasoning", "id": rs_id, "summary": []}},
            {"type": "response.output_item.done", "output_index": output_index, "item": item},
        ]

    def _message_response(self, step: Dict[str, Any], text: str) -> List[Dict[str, Any]]:
        ids = self._ids()
        events = [self._created(ids["resp"])]
        idx = 0
        if step.get("reasoning"):
            events += self._reasoning_events(str(step["reasoning"]), ids["rs"], idx)
            idx += 1
        events += self._message_events(text, ids["msg"], idx)
        events.append(self._completed(ids["resp"], step))
        return events

    # ---- step kinds -----------------------------------------------------------------
    def _step_message(self, step: Dict[str, Any]) -> None:
        self._start_sse()
        for ev in self._message_response(step, str(step["message"])):
            self._event(ev)

    def _step_shell(self, step: Dict[str, Any]) -> None:
        ids = self._ids()
        events = [self._created(ids["resp"])]
        idx = 0
        if step.get("reasoning"):
            events += self._reasoning_events(str(step["reasoning"]), ids["rs"], idx)
            idx += 1
        if step.get("message"):
            events += self._message_events(str(step["message"]), ids["msg"], idx)
            idx += 1
        args = json.dumps({"cmd": str(step["shell"]),
                           "yield_time_ms": int(step.get("yield_time_ms", 10000))})
        call = {"type": "function_call", "id": ids["fc"], "call_id": ids["call"],
                "name": "exec_command", "arguments": args, "status": "completed"}
        events.append({"type": "response.output_item.added", "output_index": idx,
                       "item": dict(call, arguments="", status="in_progress")})
        events.append({"type": "response.output_item.done", "output_index": idx, "item": call})
        events.append(self._completed(ids["resp"], step))
        self._start_sse()
        for ev in events:
            self._event(ev)

    def _step_slow_message(self, step: Dict[str, Any]) -> None:
        text = str(step["slow_message"])
        seconds = float(step.get("seconds", 5.0))
        n_deltas = int(step.get("deltas", max(2, min(50, int(seconds * 2) + 1))))
        ids = self._ids()
        self._start_sse()
        self._event(self._created(ids["resp"]))
        events = self._message_events(text, ids["msg"], 0, deltas=n_deltas)
        deltas = [e for e in events if e["type"] == "response.output_text.delta"]
        self._event(events[0])
        gap = seconds / max(1, len(deltas))
        for ev in deltas:
            if not self._wait(gap):
                return
            self._event(ev)
        self._event(events[-1])
        self._event(self._completed(ids["resp"], step))

    def _step_hang_before_headers(self, step: Dict[str, Any]) -> None:
        self._wait(float(step.get("max_seconds", self.server.owner.max_hang_seconds)))
        self.close_connection = True

    def _step_stall_after(self, step: Dict[str, Any]) -> None:
        n = int(step["stall_after"])
        events = self._message_response(step, str(step.get("text", "this stream stalls")))
        self._start_sse()
        for ev in events[:n]:
            self._event(ev)
        self._wait(float(step.get("max_seconds", self.server.owner.max_hang_seconds)))
        self.close_connection = True

    def _step_http_error(self, step: Dict[str, Any]) -> None:
        status = int(step["http_error"])
        body = step.get("body")
        if body is None:
            if status == 429 and (step.get("usage_limit") or "resets_at" in step
                                  or "resets_in_seconds" in step):
                err: Dict[str, Any] = {"type": "usage_limit_reached",
                                       "message": "The usage limit has been reached",
                                       "plan_type": step.get("plan_type", "pro")}
                if "resets_at" in step:
                    err["resets_at"] = int(step["resets_at"])
                if "resets_in_seconds" in step:
                    err["resets_in_seconds"] = int(step["resets_in_seconds"])
                body = {"error": err}
            elif status == 429:
                body = {"error": {"message": "Rate limit reached (mock)", "type": "rate_limit_exceeded",
                                  "code": "rate_limit_exceeded"}}
            elif status >= 500:
                body = {"error": {"message": "internal error (mock)", "type": "server_error", "code": None}}
            else:
                body = {"error": {"message": "bad request mock", "type": "invalid_request_error",
                                  "code": None}}
        headers = {str(k): str(v) for k, v in (step.get("headers") or {}).items()}
        self._send_json(status, body, headers)

    def _step_response_failed(self, step: Dict[str, Any]) -> None:
        ids = self._ids()
        self._start_sse()
        self._event(self._created(ids["resp"]))
        self._event({"type": "response.failed",
                     "response": {"id": ids["resp"], "object": "response", "status": "failed",
                                  "error": {"code": step.get("code", "server_error"),
                                            "message": str(step["response_failed"])}}})

    def _step_drop(self, step: Dict[str, Any]) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _Server(http.server.HTTPServer):
    daemon_threads = True  # never keeps the interpreter alive; close() joins them anyway
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, owner: "MockModelServer", addr: Any) -> None:
        self.owner = owner
        super().__init__(addr, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        t = threading.Thread(target=self._process_request_thread, args=(request, client_address),
                             name=f"mock-model-conn-{client_address[1]}", daemon=True)
        self.owner._track_thread(t)
        t.start()

    def _process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:  # noqa: BLE001 - a broken client must not kill the server
            if not self.owner._stop.is_set() and self.owner.verbose:
                self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.owner.verbose:
            super().handle_error(request, client_address)


StepList = Sequence[Dict[str, Any]]


class MockModelServer:
    """Scripted Responses-API server on 127.0.0.1; see the module docstring."""

    def __init__(self, script: Union[StepList, str, Path, None] = None, *,
                 log_path: Union[str, Path, None] = None, port: int = 0,
                 repeat_last: bool = True, max_hang_seconds: float = DEFAULT_MAX_HANG_SECONDS,
                 verbose: bool = False) -> None:
        if isinstance(script, (str, Path)):
            script = json.loads(Path(script).read_text())
        self.script: List[Dict[str, Any]] = [dict(s) for s in (script or [])]
        for s in self.script:
            step_kind(s)  # validate early
        self.repeat_last = repeat_last
        self.max_hang_seconds = float(max_hang_seconds)
        self.verbose = verbose
        self.log_path = Path(log_path) if log_path else None
        self.requests: List[Dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._cursor = 0
        self._ids = 0
        self._conns: set = set()
        self._threads: List[threading.Thread] = []
        self._closed = False
        self._httpd = _Server(self, ("127.0.0.1", int(port)))
        self.port: int = self._httpd.server_address[1]
        self._serve_thread = threading.Thread(target=self._httpd.serve_forever,
                                              kwargs={"poll_interval": 0.1},
                                              name=f"mock-model-server-{self.port}", daemon=True)
        self._serve_thread.start()

    # ---- public ---------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def responses_requests(self) -> List[Dict[str, Any]]:
        """Logged ``POST .../responses`` requests only."""
        with self._lock:
            return [r for r in self.requests if r["step_kind"] is not None]

    def set_script(self, script: StepList) -> None:
        """Replace the script and restart at its first step (request log is kept)."""
        steps = [dict(s) for s in script]
        for s in steps:
            step_kind(s)
        with self._lock:
            self.script = steps
            self._cursor = 0

    def append_steps(self, steps: Iterable[Dict[str, Any]]) -> None:
        new = [dict(s) for s in steps]
        for s in new:
            step_kind(s)
        with self._lock:
            self.script.extend(new)

    def wait_for_requests(self, n: int, timeout: float) -> bool:
        """Wait (bounded) until at least ``n`` requests to /responses were seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.responses_requests) >= n:
                return True
            time.sleep(0.02)
        return len(self.responses_requests) >= n

    def close(self, join_timeout: float = 5.0) -> None:
        """Stop serving, unblock hung/stalled handlers, close every socket, join all threads."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._stop.set()
        self._httpd.shutdown()
        self._serve_thread.join(join_timeout)
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + join_timeout
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        self._httpd.server_close()
        alive = [t.name for t in threads if t.is_alive()]
        if alive:
            raise RuntimeError(f"mock model server: handler threads did not stop: {alive}")

    def __enter__(self) -> "MockModelServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- internals ------------------------------------------------------------------
    def _next_step(self) -> "tuple[Optional[int], Dict[str, Any]]":
        with self._lock:
            if not self.script:
                return None, {"message": DEFAULT_FINAL_MESSAGE}
            if self._cursor < len(self.script):
                i = self._cursor
                self._cursor += 1
                return i, self.script[i]
            if self.repeat_last:
                return len(self.script) - 1, self.script[-1]
            return None, {"message": DEFAULT_FINAL_MESSAGE}

    def _next_id(self) -> int:
        with self._lock:
            self._ids += 1
            return self._ids

    def _record(self, entry: Dict[str, Any]) -> None:
        with self._lock:
            entry["n"] = len(self.requests)
            self.requests.append(entry)
            if self.log_path is not None:
                with open(self.log_path, "a", encoding="utf-8") as fh:
                    fh.write(json.dumps(entry) + "\n")

    def _register_conn(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.add(conn)
        if self._stop.is_set():
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _unregister_conn(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.discard(conn)

    def _track_thread(self, t: threading.Thread) -> None:
        with self._lock:
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(description="Scripted loopback Responses-API mock for the Codex CLI")
    ap.add_argument("--script", required=True, help="JSON file: a list of steps")
    ap.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--port-file", help="write the bound port number here once listening")
    ap.add_argument("--log", help="append every request as JSON lines to this file")
    ap.add_argument("--max-seconds", type=float, default=3600.0, help="exit after this long (bound)")
    ap.add_argument("--verbose", action="store_true")
    args = ap.parse_args(argv)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    srv = MockModelServer(args.script, log_path=args.log, port=args.port,
                          max_hang_seconds=args.max_seconds, verbose=args.verbose)
    try:
        if args.port_file:
            tmp = args.port_file + ".tmp"
            with open(tmp, "w") as fh:
                fh.write(f"{srv.port}\n")
            os.replace(tmp, args.port_file)
        print(f"mock model server listening on {srv.base_url}", flush=True)
        stop.wait(args.max_seconds)
    finally:
        srv.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
