#!/usr/bin/python3 -I
# agentbox-approve: the agent's permission requests, answered from a phone (agentbox:approvals).
#   approve serve   the receiver (agentbox-approve.service, a user of its own): takes each request from the hook on
#                   a Unix socket only it can create, sends the ntfy notification with Allow / Deny (/ Always) buttons
#                   whose URLs hold a one-time token, and takes a tap only over the tailnet interface, from another
#                   device of the tailnet (an approver's, when the stack names them)
#   approve hook    Claude Code's hook (the agent's user, the hook's JSON on stdin). PermissionRequest: asks the
#                   receiver, prints the decision in Claude Code's documented form; no answer in time prints nothing.
#                   Claude Code shows its prompt in the terminal meanwhile, and the first answer wins (its hooks
#                   race the prompt). PostToolUse, Stop, StopFailure, UserPromptSubmit: tell the receiver which
#                   requests were settled in the terminal, so that a tap on them is refused.
# Python's standard library only: the box has python3 for cloud-init, and an HTTP server, a Unix socket server and a
# client for tailscaled's socket are what it does well. -I (isolated): no PYTHON* variables, no user site-packages,
# which the agent could otherwise fill with code that runs in its hook.
import hashlib
import http.client
import http.server
import json
import os
import re
import secrets
import select
import socket
import socketserver
import stat
import sys
import threading
import time
import urllib.parse

RUN_DIR = "/run/agentbox-approvals"
SOCKET = RUN_DIR + "/approve.sock"
TAILSCALED = "/run/tailscale/tailscaled.sock"
INTERFACE = "tailscale0"
NAME = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
TOOL = re.compile(r"^[A-Za-z0-9_.:-]{1,80}$")
SESSION = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_PENDING = 16
# what a notification shows of a call at most (ntfy takes 4096 bytes); a longer call is only offered Deny
SHOWN = 1000


# box.env: KEY=VALUE lines, values literal (as lib.sh's agentbox_load_env reads them)
def settings(path="/etc/agentbox/box.env"):
    env = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.rstrip("\n").partition("=")
                if sep and re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                    env[key] = value
    except OSError:
        pass
    return env


# text the agent chose, made safe to show: one line of printable characters, cut to limit
def printable(text, limit):
    text = re.sub(r"\s+", " ", "".join(c if c.isprintable() else " " for c in str(text))).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --- the hook ------------------------------------------------------------------------------------------------------


# Claude Code's PermissionRequest decision for an answer (allow, always, deny); None: no decision
def hook_output(answer, request):
    decision = {"behavior": "allow"}
    if answer == "always":
        # the rules the terminal's "always allow" would add: Claude Code's own suggestions, echoed
        suggestions = request.get("permission_suggestions")
        if isinstance(suggestions, list) and suggestions:
            decision["updatedPermissions"] = suggestions
    elif answer == "deny":
        decision = {"behavior": "deny", "message": "Denied from the phone (agentbox approvals)."}
    elif answer != "allow":
        return None
    return {"hookSpecificOutput": {"hookEventName": "PermissionRequest", "decision": decision}}


# what the tool would do: the command; a file and how much is written to it; else its whole input
def summary(request):
    tool_input = request.get("tool_input")
    if isinstance(tool_input, dict):
        if isinstance(tool_input.get("command"), str):
            return tool_input["command"]
        if isinstance(tool_input.get("file_path"), str):
            size = sum(len(v) for k, v in tool_input.items() if k != "file_path" and isinstance(v, str))
            return f"{tool_input['file_path']} ({size} characters of new text; the diff is in the terminal)"
    return json.dumps(tool_input, ensure_ascii=False)


# the rules "always allow" would add, in words: Bash(npm test), ...
def rules_of(request):
    words = []
    for s in request.get("permission_suggestions") or []:
        for r in (s.get("rules") or []) if isinstance(s, dict) else []:
            if isinstance(r, dict):
                words.append(f"{r.get('toolName', '?')}({r['ruleContent']})" if r.get("ruleContent") else str(r.get("toolName", "?")))
    return ", ".join(words)


# which call a PermissionRequest and the PostToolUse after it are about
def call_key(request):
    text = json.dumps([request.get("tool_name"), request.get("tool_input")], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


# The socket's folder is the receiver's: not the agent's, not root's, writable by no one else (/run is root's, so
# the agent cannot have made it; a socket of its own would answer its own requests)
def receiver_socket_trusted():
    try:
        st = os.lstat(RUN_DIR)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid not in (0, os.getuid()) and not st.st_mode & 0o022


def ask_receiver(message, timeout):
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(SOCKET)
        s.sendall(json.dumps(message).encode() + b"\n")
        return json.loads(s.makefile("rb").readline(4096) or b"{}")


def hook():
    try:
        request = json.loads(sys.stdin.buffer.read(1 << 20) or b"{}")
    except ValueError:
        return 0
    if not isinstance(request, dict) or not receiver_socket_trusted():
        return 0
    event = request.get("hook_event_name")
    session = str(request.get("session_id", ""))
    session = session if SESSION.match(session) else ""
    try:
        if event in ("PostToolUse", "Stop", "StopFailure", "UserPromptSubmit"):
            call = call_key(request) if event == "PostToolUse" else ""
            ask_receiver({"settle": session, "call": call}, 10)
            return 0
        if event != "PermissionRequest":
            return 0
        agent = os.environ.get("AGENTBOX_AGENT", "")
        text = printable(summary(request), 100000)
        ask = {
            "agent": agent if NAME.match(agent) else "",
            "tool": str(request.get("tool_name", "")),
            "summary": text[:SHOWN],
            "cut": len(text) > SHOWN,
            "always": printable(rules_of(request), 200),
            "session": session,
            "call": call_key(request),
        }
        answer = ask_receiver(ask, int(settings().get("APPROVAL_TIMEOUT", "900")) + 15)
    except (OSError, ValueError):
        return 0
    out = hook_output(answer.get("answer"), request) if isinstance(answer, dict) else None
    if out is not None:
        print(json.dumps(out))
    return 0


# --- the receiver --------------------------------------------------------------------------------------------------


class Request:
    def __init__(self, agent, tool, text, cut, always, session, call):
        self.agent, self.tool, self.text, self.cut, self.always = agent, tool, text, cut, always
        self.session, self.call = session, call
        self.answer = None
        self.done = threading.Event()
        self.settled = threading.Event()


pending = {}  # sha256(token) -> Request
lock = threading.Lock()


def log(line):
    print(line, flush=True)


# the IPv4 address of an interface (SIOCGIFADDR), or None
def interface_ipv4(name):
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


# an address of this box itself (a socket can be bound to it): where the agent's own calls come from
def is_local(address):
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
        return True
    except OSError:
        return False


class TailscaledConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(TAILSCALED)


# who owns the tailnet device at address:port, from tailscaled's LocalAPI: (login name, device name), or None
def whois(address, port):
    conn = TailscaledConnection("local-tailscaled.sock", timeout=5)
    try:
        conn.request("GET", "/localapi/v0/whois?" + urllib.parse.urlencode({"addr": f"{address}:{port}"}))
        response = conn.getresponse()
        if response.status != 200:
            return None
        who = json.loads(response.read(1 << 20))
        login = (who.get("UserProfile") or {}).get("LoginName") or ""
        node = who.get("Node") or {}
        # a tagged device (a server, another agent box) has no owner to answer for it
        if node.get("Tags") or login == "tagged-devices":
            return None
        device = node.get("ComputedName") or node.get("Name") or "?"
        return (printable(login, 100), printable(device, 100)) if login else None
    except (OSError, ValueError, AttributeError, http.client.HTTPException):
        return None
    finally:
        conn.close()


# the notification with its buttons (ntfy's http actions, sent by the phone itself); False when it was not sent
def notify(env, ntfy, req, token, address, port):
    base = f"http://{address}:{port}/a/{token}"
    # a call too long to show whole may only be denied from here
    actions = [] if req.cut else [f"http, Allow, {base}/allow, clear=true"]
    if req.always and not req.cut:
        actions.append(f"http, Always allow, {base}/always, clear=true")
    actions.append(f"http, Deny, {base}/deny, clear=true")
    where = f"{env.get('BOX_PROJECT', 'agentbox')}/{env.get('BOX_STACK', '?')}" + (f"/{req.agent}" if req.agent else "")
    wait = int(env.get("APPROVAL_TIMEOUT", "900"))
    body = (
        f"[{where}] asks to use {req.tool}: {req.text}"
        + (" [cut: too long to show, read it in the terminal]" if req.cut else "")
        + (f"\nAlways allow adds: {req.always}" if req.always and not req.cut else "")
        + f"\nTap within {f'{wait // 60} min' if wait >= 120 else f'{wait} s'}, or answer in the terminal:"
        f" tmux -L agentbox attach -t {req.agent or 'claude'}"
    )
    url = urllib.parse.urlsplit(ntfy.get("NTFY_URL", ""))
    if url.scheme not in ("http", "https") or not url.hostname:
        return False
    headers = {"Title": f"agentbox {socket.gethostname()}: permission", "Priority": "high", "Tags": "question"}
    headers["Actions"] = "; ".join(actions)
    if ntfy.get("NTFY_TOKEN"):
        headers["Authorization"] = "Bearer " + ntfy["NTFY_TOKEN"]
    cls = http.client.HTTPSConnection if url.scheme == "https" else http.client.HTTPConnection
    try:
        conn = cls(url.hostname, url.port, timeout=10)
        conn.request("POST", url.path or "/", body=body.encode(), headers=headers)
        return 200 <= conn.getresponse().status < 300
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        conn.close()


class HookHandler(socketserver.StreamRequestHandler):
    # One message from the hook. A request: notify, then wait for the tap, the time limit, the hook going away (Esc
    # or a plain "no" in the terminal ends it), or word that it was settled in the terminal. A settle: that word.
    def handle(self):
        env, srv = self.server.env, self.server
        self.connection.settimeout(10)
        try:
            ask = json.loads(self.rfile.readline(8192) or b"{}")
        except (OSError, ValueError):
            return
        self.connection.settimeout(None)
        if not isinstance(ask, dict):
            return
        session = ask.get("session") or ask.get("settle")
        session = session if isinstance(session, str) and SESSION.match(session) else ""
        call = ask.get("call") if isinstance(ask.get("call"), str) else ""
        if "settle" in ask:
            with lock:
                for req in pending.values():
                    if session and req.session == session and (not call or req.call == call):
                        req.settled.set()
            return self.reply(None)
        agents = [a for a in env.get("AGENTS", "").split(",") if a]
        agent = ask.get("agent") if ask.get("agent") in agents else ""
        tool = ask.get("tool") if TOOL.match(str(ask.get("tool", ""))) else "a tool"
        always = printable(ask.get("always", ""), 200) if isinstance(ask.get("always"), str) else ""
        req = Request(agent, tool, printable(ask.get("summary", ""), SHOWN), ask.get("cut") is True, always, session, call)
        token = secrets.token_urlsafe(32)
        key = hashlib.sha256(token.encode()).hexdigest()
        with lock:
            full = len(pending) >= MAX_PENDING
            if not full:
                pending[key] = req
        if full:
            log(f"refused a request ({agent or 'agent'}, {tool}): {MAX_PENDING} are waiting already")
            return self.reply(None)
        rid, timeout = key[:8], int(env.get("APPROVAL_TIMEOUT", "900"))
        try:
            if not notify(env, srv.ntfy, req, token, srv.address, srv.port):
                log(f"request {rid} ({agent or 'agent'}, {tool}): the ntfy server could not be reached; the terminal's")
                return self.reply(None)
            log(f"request {rid} ({agent or 'agent'}, {tool}): sent, waiting {timeout} s")
            deadline = time.monotonic() + timeout
            while True:
                left = deadline - time.monotonic()
                why = ""
                if left <= 0:
                    why = f"no answer in {timeout} s; the prompt is the terminal's"
                elif req.settled.is_set():
                    why = "answered in the terminal; a tap now is refused"
                else:
                    readable, _, _ = select.select([self.connection], [], [], min(left, 0.2))
                    if readable and not self.connection.recv(4096):
                        why = "the hook went away (the terminal's answer); a tap now is refused"
                # under the lock, so that a tap either answered first or finds the request gone
                with lock:
                    if req.done.is_set():
                        break
                    if why:
                        pending.pop(key, None)
                        log(f"request {rid}: {why}")
                        break
        finally:
            with lock:
                pending.pop(key, None)
        self.reply(req.answer if req.done.is_set() else None)

    def reply(self, answer):
        try:
            self.wfile.write(json.dumps({"answer": answer}).encode() + b"\n")
        except OSError:
            pass


class TapHandler(http.server.BaseHTTPRequestHandler):
    # a tap on a button: POST /a/<token>/<allow|always|deny>, from another device of the tailnet
    timeout = 10

    def handle(self):
        # the box itself (the agent) is refused before a byte of its request is read
        if is_local(self.client_address[0]):
            log(f"refused a tap from the box itself ({self.client_address[0]})")
            text = b"Refused: an answer must come from another device of the tailnet, not the box.\n"
            self.wfile.write(b"HTTP/1.0 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(text), text))
            return
        super().handle()

    def send(self, code, text):
        body = (text + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.send(405, "Use the notification's buttons (they POST).")

    def do_POST(self):
        m = re.fullmatch(r"/a/([A-Za-z0-9_-]{43})/(allow|always|deny)", self.path)
        if not m:
            return self.send(404, "No such request.")
        address, port = self.client_address[:2]
        who = whois(address, port)
        if who is None:
            log(f"refused a tap from {address}: tailscaled does not know whose device it is")
            return self.send(403, "Refused: tailscaled cannot tell whose device this is.")
        login, device = who
        approvers = self.server.approvers
        if approvers and login.lower() not in approvers:
            log(f"refused a tap from {device} ({login}): not one of agentbox:approvers")
            return self.send(403, f"Refused: {login} is not one of the stack's approvers.")
        key = hashlib.sha256(m.group(1).encode()).hexdigest()
        with lock:
            req = pending.get(key)
            # a call too long to show whole: Allow is refused and the request waits on (Deny still counts)
            cut = req is not None and req.cut and m.group(2) != "deny"
            if not cut:
                req = pending.pop(key, None)
                if req is not None and not req.settled.is_set():
                    req.answer = m.group(2)
                    req.done.set()
        if cut:
            log(f"refused a tap from {device} ({login}): {m.group(2)} on a call too long to show")
            return self.send(403, "Refused: this call was too long to show; only Deny is taken here. Read it in the terminal.")
        if req is None or not req.done.is_set():
            log(f"refused a tap from {device} ({login}): the request is no longer waiting")
            return self.send(410, "Too late: this request was answered already (here or in the terminal) or it expired.")
        log(f"request {key[:8]}: {m.group(2)} by {login} on {device}")
        self.send(200, f"{m.group(2).capitalize()}: {req.tool} for {req.agent or 'the agent'}.")

    def log_message(self, *args):
        pass


class TapServer(http.server.ThreadingHTTPServer):
    # at most this many taps at once: a flood of slow connections cannot take the receiver's memory
    slots = threading.BoundedSemaphore(16)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            return self.shutdown_request(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


def serve():
    ntfy = settings(os.path.join(os.environ.get("CREDENTIALS_DIRECTORY", "/nonexistent"), "ntfy"))
    env = settings()
    # the settings are read once, and without them nothing is taken (no approvers read would mean anyone's taps)
    if env.get("APPROVALS") != "1" or not ntfy.get("NTFY_URL"):
        log("no approvals settings (box.env, agentbox:approvalsNtfyUrl): nothing to do")
        return 1
    port = int(env["APPROVE_PORT"])
    # the tailnet's own address, on its own interface (the host firewall keeps every other interface off it)
    said = False
    while (address := interface_ipv4(INTERFACE)) is None:
        if not said:
            log(f"waiting for the tailnet ({INTERFACE} has no address yet)")
            said = True
        time.sleep(5)
    taps = TapServer((address, port), TapHandler)
    taps.daemon_threads = True
    taps.approvers = [a.lower() for a in env.get("APPROVERS", "").split(",") if a]
    if os.path.exists(SOCKET):
        os.unlink(SOCKET)
    hooks = socketserver.ThreadingUnixStreamServer(SOCKET, HookHandler)
    hooks.daemon_threads = True
    os.chmod(SOCKET, 0o666)
    hooks.ntfy, hooks.address, hooks.port, hooks.env = ntfy, address, port, env
    threading.Thread(target=taps.serve_forever, daemon=True).start()
    log(f"listening on {address}:{port} ({INTERFACE}) for taps, on {SOCKET} for the hook")
    hooks.serve_forever()
    return 0


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else ""
    if mode in ("hook", "serve"):
        sys.exit(hook() if mode == "hook" else serve())
    print("usage: approve serve | hook", file=sys.stderr)
    sys.exit(2)
