"""The HTTP API against its two documents, on the running flag-server binary.

1. Every kind of OFREP answer the server gives (each value type, each reason it can give, bulk
   with per-flag errors, every error status, 304) is validated against the OFREP
   `service/openapi.yaml` of open-feature/protocol (the copy in `ofrep-spec/`, commit in its first
   line), with two adjustments, both written here:
   - `reason` may also be `DEFAULT` or `CACHED` (OpenFeature's own standard reasons; the design
     contract keeps them deliberately);
   - the document's `oneOf` over value types is read as `anyOf`: its `codeDefaultFlag` (no
     properties) matches every object and an integer matches both `integerFlag` and `floatFlag`,
     so no answer at all could satisfy it as written.
2. schemathesis (`--checks all`, bounded by `--max-time`) runs against the server's own
   `/openapi.json`: no request the document calls valid may be rejected, none it calls invalid
   accepted, no answer may break its schema, and no `5xx`.

    python api_check.py target/debug/flag-server [--redis-postgres] [--max-time SECONDS]
"""

import copy
import json
import os
import subprocess
import sys
import uuid

import jsonschema
import yaml

import launch
from launch import http

ADMIN_TOKEN = "api-check-admin"
SCOPED_TOKEN = "api-check-scoped"
HERE = os.path.dirname(os.path.abspath(__file__))


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}")


def ofrep_document() -> dict:
    with open(os.path.join(HERE, "ofrep-spec", "openapi.yaml")) as file:
        document = yaml.safe_load(file)
    schemas = document["components"]["schemas"]
    success = schemas["evaluationSuccess"]["allOf"]
    success[0]["properties"]["reason"]["enum"] += ["DEFAULT", "CACHED"]
    success[1] = {"anyOf": success[1]["oneOf"]}
    return document


def validate(document: dict, path: str, status: int, body: bytes) -> None:
    """Validates one answer against the schema the OFREP document gives its status."""
    responses = document["paths"][path]["post"]["responses"]
    declared = responses.get(str(status))
    if declared is None and status >= 500:
        declared = responses["500"]
    if declared is None:
        raise AssertionError(f"OFREP does not describe {status} for {path}")
    content = declared.get("content")
    if content is None:
        return
    schema = {"components": document["components"], **content["application/json"]["schema"]}
    jsonschema.Draft202012Validator(schema).validate(json.loads(body))


def ofrep_answers(base: str, document: dict) -> None:
    env = f"api-{uuid.uuid4().hex[:10]}"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    flags = {
        "bool": {"enabled": True},
        "string": {"enabled": True, "variants": {"a": "x", "b": "y"}, "defaultVariant": "a", "offVariant": "b"},
        "integer": {"enabled": True, "variants": {"one": 1, "two": 2}, "defaultVariant": "one", "offVariant": "two"},
        "float": {"enabled": True, "variants": {"half": 0.5, "off": 1.5}, "defaultVariant": "half"},
        "object": {"enabled": True, "variants": {"on": {"deep": [1, {"k": True}]}, "off": {}}, "metadata": {"team": "web"}},
        "disabled": {"enabled": False},
        "rule": {"enabled": True, "rules": [{"conditions": [{"attribute": "plan", "operator": "equals", "value": "pro"}], "variant": "off"}]},
        "split": {"enabled": True, "rollout": [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 1}]},
    }
    for key, flag in flags.items():
        status, body = http("PUT", f"{base}/v1/environments/{env}/flags/{key}", flag, admin)
        check(status == 201, f"seeded {key} ({status} {body[:200]!r})")
    client = {"Authorization": f"Bearer {ADMIN_TOKEN}", "X-Environment": env}
    single = "/ofrep/v1/evaluate/flags/{key}"
    bulk = "/ofrep/v1/evaluate/flags"
    user = {"context": {"targetingKey": "user-1", "plan": "free"}}
    cases = [(key, user, client, 200) for key in flags]
    cases += [
        ("rule", {"context": {"targetingKey": "u", "plan": "pro"}}, client, 200),
        ("split", {"context": {}}, client, 400),
        ("missing", user, client, 404),
        ("bool", {"nope": 1}, client, 400),
        ("bool", user, {"X-Environment": env}, 401),
        ("bool", user, {"Authorization": f"Bearer {SCOPED_TOKEN}", "X-Environment": env}, 403),
        ("bool", user, {**client, "X-Environment": "Not Valid"}, 400),
    ]
    for key, body, headers, expected in cases:
        status, answer = http("POST", f"{base}/ofrep/v1/evaluate/flags/{key}", body, headers)
        check(status == expected, f"single {key}: {status} (expected {expected})")
        validate(document, single, status, answer)
        print(f"ok:   answer valid against the OFREP document: {answer[:120]!r}")
    status, answer = http("POST", f"{base}{bulk}", {"context": {}}, client)
    check(status == 200, "bulk with a per-flag error")
    validate(document, bulk, status, answer)
    check(
        any(flag.get("errorCode") == "TARGETING_KEY_MISSING" for flag in json.loads(answer)["flags"]),
        "the bulk answer carries split's per-flag error",
    )
    for body, headers, expected in [
        (user, client, 200),
        ({"context": 3}, client, 400),
        (user, {"X-Environment": env}, 401),
        (user, {"Authorization": f"Bearer {SCOPED_TOKEN}", "X-Environment": env}, 403),
    ]:
        status, answer = http("POST", f"{base}{bulk}", body, headers)
        check(status == expected, f"bulk: {status} (expected {expected})")
        validate(document, bulk, status, answer)


def schemathesis(base: str, max_time: int) -> None:
    binary = os.path.join(os.path.dirname(sys.executable), "schemathesis")
    command = [
        binary, "--config-file", os.path.join(HERE, "schemathesis.toml"),
        "run", f"{base}/openapi.json",
        "--checks", "all",
        "--header", f"Authorization: Bearer {ADMIN_TOKEN}",
        "--max-time", str(max_time),
        "--workers", "1",
        "--seed", "1",
        # An event stream never ends by itself; tests/streams.rs checks it over real sockets.
        "--exclude-operation-id", "eventStream",
    ]
    print("running:", " ".join(command).replace(ADMIN_TOKEN, "[token]"), flush=True)
    result = subprocess.run(command)
    check(result.returncode == 0, f"schemathesis --checks all found nothing (exit {result.returncode})")


def main() -> int:
    binary = os.path.abspath(sys.argv[1])
    shared = "--redis-postgres" in sys.argv[2:]
    max_time = 60
    if "--max-time" in sys.argv:
        max_time = int(sys.argv[sys.argv.index("--max-time") + 1])
    document = ofrep_document()
    # The admin token is also an unscoped client token, so one Authorization header serves every
    # route; the scoped token may read another environment only (`403` here).
    extra = {"FLAG_CLIENT_TOKENS": f"{ADMIN_TOKEN},elsewhere:{SCOPED_TOKEN}"}
    with launch.Server(binary, shared, ADMIN_TOKEN, extra) as server:
        ofrep_answers(server.base, copy.deepcopy(document))
        schemathesis(server.base, max_time)
    check(server.status == 0, f"flag-server exits 0 on SIGTERM (got {server.status})")
    print(f"API checks passed ({'Redis + Postgres' if shared else 'SQLite + memory'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
