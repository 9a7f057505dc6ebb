"""schemathesis hooks for Tests/contract/run: bound the calls that block by design.

docs/openapi.yaml documents these parameters with their real ranges (a job read may wait 300 s,
an event stream follows until the client leaves). The fuzzer keeps every other value it
generates; only these are capped before the request goes out, so no request outlives
--request-timeout:

- GET /api/events: `follow` is always `false` (send the backlog and close).
- GET /api/gpu/jobs/{id} and GET /api/gpu/assignments: a numeric `wait` over 1 s becomes 1.
- POST /api/gpu/generate: a numeric `wait_s` over 1 becomes 1.
"""

import re

import schemathesis

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
    elif method == "POST" and path == "/api/gpu/generate":
        if isinstance(case.body, dict) and "wait_s" in case.body:
            case.body["wait_s"] = _capped(case.body["wait_s"])


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
