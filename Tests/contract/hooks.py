"""schemathesis hooks for Tests/contract/run: bound the calls that block by design, and sign
node calls as a joined node.

docs/openapi.yaml documents these parameters with their real ranges (a job read may wait 300 s,
an event stream follows until the client leaves). The fuzzer keeps every other value it
generates; only these are capped before the request goes out, so no request outlives
--request-timeout:

- GET /api/events: `follow` is always `false` (send the backlog and close).
- GET /api/gpu/jobs/{id} and GET /api/gpu/assignments: a numeric `wait` over 1 s becomes 1; an
  assignments poll without `wait` (20 s by default) gets 1.
- POST /api/gpu/generate: a numeric `wait_s` over 1 becomes 1.

With FUZZ_SIGN_NODE and FUZZ_SIGN_KEY (the node's DATA/keys/sign.key), three of every four
calls to the routes only a node may call (heartbeat, leave, reports, assignments, job results,
connectivity reports) are signed as that node (docs/API.md section 3), over the exact bytes
and path that go out, so the fuzzer reaches what the lead does with a node's bodies; for
heartbeats, leaves and reports the path names that node. The fourth keeps whatever the fuzzer
generated for the signature headers. So that the signed calls stay meaningful, that node is
not removed: `DELETE /nodes/{name}` naming it names another (nodes the fuzzer joined itself
are still removed).
"""

import base64
import hashlib
import itertools
import os
import re
import secrets
import time

import requests
import schemathesis

NODE_ONLY = {
    ("POST", "/api/nodes/{name}/heartbeat"),
    ("POST", "/api/nodes/{name}/leave"),
    ("POST", "/api/nodes/{name}/reports"),
    ("GET", "/api/gpu/assignments"),
    ("POST", "/api/gpu/jobs/{id}/result"),
    ("POST", "/api/connectivity/status"),
}
_SIGN_NODE = os.environ.get("FUZZ_SIGN_NODE")
_SIGN_KEY = None
if _SIGN_NODE:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    with open(os.environ["FUZZ_SIGN_KEY"], encoding="ascii") as key_file:
        _SIGN_KEY = Ed25519PrivateKey.from_private_bytes(base64.b64decode(key_file.read().strip()))
_calls = itertools.count()


class NodeSignature(requests.auth.AuthBase):
    """Signs the prepared request: its method, path and query as sent, and its body bytes."""

    def __call__(self, request):
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode("utf-8")
        timestamp = str(int(time.time() * 1000))
        nonce = secrets.token_hex(16)
        text = "\n".join(["aurora-v1", request.method.upper(), request.path_url, _SIGN_NODE, timestamp, nonce,
                          hashlib.sha256(body).hexdigest()])
        request.headers["X-Aurora-Node"] = _SIGN_NODE
        request.headers["X-Aurora-Timestamp"] = timestamp
        request.headers["X-Aurora-Nonce"] = nonce
        request.headers["X-Aurora-Signature"] = base64.b64encode(_SIGN_KEY.sign(text.encode("utf-8"))).decode("ascii")
        return request

WAIT_CAP = 1
_DECIMAL = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# Swift's Double(String) also reads hexadecimal floats ("0x1p8") and "inf"/"nan"; the agent
# refuses infinities and NaN, but a hexadecimal number in range would wait for real.
_HEX = re.compile(r"[+-]?0[xX]")


def _capped(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value if value <= WAIT_CAP else WAIT_CAP
    text = str(value)
    if _DECIMAL.fullmatch(text):
        try:
            return value if float(text) <= WAIT_CAP else str(WAIT_CAP)
        except OverflowError:
            return str(WAIT_CAP)
    if _HEX.match(text):
        return str(WAIT_CAP)
    return value


@schemathesis.hook
def before_call(context, case, kwargs):
    path, method = case.operation.path, case.operation.method.upper()
    if method == "GET" and path == "/api/events":
        case.query = dict(case.query or {})
        case.query["follow"] = "false"
    elif method == "GET" and path in ("/api/gpu/jobs/{id}", "/api/gpu/assignments"):
        if isinstance(case.query, dict) and "wait" in case.query:
            case.query["wait"] = _capped(case.query["wait"])
        elif path == "/api/gpu/assignments":
            # Without `wait` a worker's long poll lasts 20 s.
            case.query = dict(case.query or {}, wait=str(WAIT_CAP))
    elif method == "POST" and path == "/api/gpu/generate":
        if isinstance(case.body, dict) and "wait_s" in case.body:
            case.body["wait_s"] = _capped(case.body["wait_s"])
    if _SIGN_NODE and method == "DELETE" and path == "/nodes/{name}" and (case.path_parameters or {}).get("name") == _SIGN_NODE:
        case.path_parameters = dict(case.path_parameters, name=_SIGN_NODE + "-kept")
    if _SIGN_KEY is not None and (method, path) in NODE_ONLY and next(_calls) % 4 != 3:
        if "{name}" in path:
            case.path_parameters = dict(case.path_parameters or {})
            case.path_parameters["name"] = _SIGN_NODE
        kwargs["auth"] = NodeSignature()


@schemathesis.deserializer("application/x-ndjson")
def ndjson(ctx, response):
    """`POST /api/backups` with `Accept: application/x-ndjson`: every line must be JSON; the
    last one (the backup or the error) is what is checked against the line schema."""
    import json

    lines = [line for line in response.content.decode("utf-8").split("\n") if line.strip()]
    if not lines:
        raise ValueError("an empty NDJSON stream")
    values = [json.loads(line) for line in lines]
    return values[-1]
