"""Starting and stopping the flag-server binary for the Python checks (`check.py`, `api_check.py`).

`Server(binary, shared, admin_token, extra_env)` starts it on a free port, on the embedded
default (a SQLite file in a scratch directory, the in-process cache) or, with `shared`, on the
REDIS_URL and DATABASE_URL of the environment (with a key prefix of its own), waits until
`/readyz` answers, and on leaving the `with` block stops it with SIGTERM and records its exit
status in `status`.
"""

import json
import os
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(method: str, url: str, body=None, headers=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()



class Server:
    """A running flag-server, stopped with SIGTERM on exit."""

    def __init__(self, binary: str, shared: bool, admin_token: str, extra_env=None):
        self.binary = binary
        self.shared = shared
        self.admin_token = admin_token
        self.extra_env = extra_env or {}
        self.status = None
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "FLAG_LISTEN": f"127.0.0.1:{port}",
            "FLAG_ADMIN_TOKEN": admin_token,
            "RUST_LOG": "warn",
        }

    def __enter__(self):
        scratch = tempfile.mkdtemp(prefix="flag-server-check-")
        env = dict(self.env)
        if self.shared:
            for name in ("REDIS_URL", "DATABASE_URL"):
                if not os.environ.get(name):
                    raise SystemExit(
                        f"{name} is not set: --redis-postgres needs a running Redis and Postgres"
                    )
                env[name] = os.environ[name]
            env["REDIS_KEY_PREFIX"] = f"flag-server-check-{uuid.uuid4().hex[:8]}"
        else:
            env["DATABASE_URL"] = f"sqlite://{scratch}/flags.db?mode=rwc"
        env.update(self.extra_env)
        self.process = subprocess.Popen([self.binary], env=env, cwd=scratch)
        deadline = time.monotonic() + 60
        while True:
            try:
                if http("GET", f"{self.base}/readyz")[0] == 200:
                    return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.process.kill()
                raise SystemExit("flag-server did not become ready")
            time.sleep(0.1)

    def __exit__(self, *_):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.status = self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.status = "killed after 20 s"
        return False
