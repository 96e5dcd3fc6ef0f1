"""A real OpenFeature client against the running flag-server binary.

Starts the binary given as the first argument (on the embedded default: a SQLite file in a
scratch directory and the in-process cache; with `--redis-postgres`, on the REDIS_URL and
DATABASE_URL of the environment), seeds flags through the management API, then evaluates them
with the OpenFeature Python SDK and its OFREP provider (`openfeature-sdk`,
`openfeature-provider-ofrep`): boolean, string, integer, float and object flags, a disabled flag,
a rule match, a percentage rollout (checked user by user against flagd's bucketing), a missing
flag, a missing targeting key, a type mismatch, and a toggle seen by the very next evaluation.
Stops the server with SIGTERM and expects exit status 0. Exits non-zero on the first failure.

    python check.py target/debug/flag-server [--redis-postgres]
"""

import json
import os
import sys
import uuid

import launch
from launch import http

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

ADMIN_TOKEN = "openfeature-check-admin"


def murmur3_x86_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit, as flagd's fractional operation uses it."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed
    length = len(data)
    rounded = length & ~3
    for i in range(0, rounded, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * c1) & 0xFFFFFFFF
        k = ((k << 15) | (k >> 17)) & 0xFFFFFFFF
        k = (k * c2) & 0xFFFFFFFF
        h ^= k
        h = ((h << 13) | (h >> 19)) & 0xFFFFFFFF
        h = (h * 5 + 0xE6546B64) & 0xFFFFFFFF
    k = 0
    tail = length & 3
    if tail == 3:
        k ^= data[rounded + 2] << 16
    if tail >= 2:
        k ^= data[rounded + 1] << 8
    if tail >= 1:
        k ^= data[rounded]
        k = (k * c1) & 0xFFFFFFFF
        k = ((k << 15) | (k >> 17)) & 0xFFFFFFFF
        k = (k * c2) & 0xFFFFFFFF
        h ^= k
    h ^= length
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & 0xFFFFFFFF
    h ^= h >> 16
    return h


def expected_variant(flag_key: str, targeting_key: str, rollout) -> str:
    """The variant flagd's fractional rollout gives this user."""
    total = sum(weight for _, weight in rollout)
    bucket = (murmur3_x86_32((flag_key + targeting_key).encode()) * total) >> 32
    cumulative = 0
    for variant, weight in rollout:
        cumulative += weight
        if bucket < cumulative:
            return variant
    raise AssertionError("no variant")


def check(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)
    print(f"ok: {what}")


def main() -> int:
    binary = os.path.abspath(sys.argv[1])
    shared = "--redis-postgres" in sys.argv[2:]
    with launch.Server(binary, shared, ADMIN_TOKEN) as server:
        run_checks(server.base, shared)
    check(server.status == 0, f"flag-server exits 0 on SIGTERM (got {server.status})")
    print(f"all OpenFeature checks passed ({'Redis + Postgres' if shared else 'SQLite + memory'})")
    return 0


def run_checks(base: str, shared: bool) -> None:
    # Its own environment, so a shared database never mixes runs.
    environment = f"openfeature-{uuid.uuid4().hex[:12]}"
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def put(key: str, flag: dict) -> None:
        status, body = http(
            "PUT", f"{base}/v1/environments/{environment}/flags/{key}", flag, admin
        )
        assert status in (200, 201), f"PUT {key}: {status} {body!r}"

    rollout = [("red", 30), ("green", 50), ("blue", 20)]
    put("new-checkout", {"enabled": True, "metadata": {"owner": "web"}})
    put("theme", {"enabled": True, "variants": {"dark": "dark", "light": "light"},
                  "defaultVariant": "dark", "offVariant": "light"})
    put("max-items", {"enabled": True, "variants": {"few": 10, "many": 250},
                      "defaultVariant": "many", "offVariant": "few"})
    put("discount", {"enabled": True, "variants": {"none": 0.0, "some": 12.5},
                     "defaultVariant": "some", "offVariant": "none"})
    put("layout", {"enabled": True,
                   "variants": {"grid": {"columns": 3, "gaps": [8, 16], "dense": True}, "off": {}},
                   "defaultVariant": "grid"})
    put("legacy-banner", {"enabled": False, "variants": {"on": "shown", "off": "hidden"}})
    put("beta", {"enabled": True, "defaultVariant": "off", "rules": [
        {"conditions": [{"attribute": "email", "operator": "ends_with", "value": "@example.com"}],
         "variant": "on"}]})
    put("button-colour", {"enabled": True,
                          "variants": {name: name for name, _ in rollout},
                          "defaultVariant": "red", "offVariant": "red",
                          "rollout": [{"variant": v, "weight": w} for v, w in rollout]})

    api.set_provider(OFREPProvider(base, headers_factory=lambda: {"X-Environment": environment}))
    client = api.get_client()
    alice = EvaluationContext(targeting_key="alice", attributes={"email": "alice@example.com"})
    bob = EvaluationContext(targeting_key="bob", attributes={"email": "bob@elsewhere.org"})

    details = client.get_boolean_details("new-checkout", False, alice)
    check(details.value is True and details.reason == Reason.STATIC and details.variant == "on",
          f"boolean flag: {details.value} {details.reason} {details.variant}")
    check(details.flag_metadata.get("owner") == "web" and details.flag_metadata.get("flagVersion") == 1,
          f"metadata carries the flag's metadata and flagVersion: {details.flag_metadata}")

    details = client.get_string_details("theme", "unset", alice)
    check(details.value == "dark" and details.variant == "dark", f"string flag: {details.value}")

    value = client.get_integer_value("max-items", -1, alice)
    check(value == 250 and isinstance(value, int), f"integer flag: {value!r}")

    value = client.get_float_value("discount", -1.0, alice)
    check(value == 12.5, f"float flag: {value!r}")

    value = client.get_object_value("layout", {}, alice)
    check(value == {"columns": 3, "gaps": [8, 16], "dense": True}, f"object flag: {value!r}")

    details = client.get_string_details("legacy-banner", "unset", alice)
    check(details.value == "hidden" and details.reason == Reason.DISABLED and details.variant == "off",
          f"disabled flag: {details.value} {details.reason}")

    details = client.get_boolean_details("beta", False, alice)
    check(details.value is True and details.reason == Reason.TARGETING_MATCH,
          f"rule match: {details.value} {details.reason}")
    details = client.get_boolean_details("beta", True, bob)
    check(details.value is False and details.reason == Reason.DEFAULT,
          f"no rule matched: {details.value} {details.reason}")

    seen = {}
    for n in range(300):
        user = f"user-{n}"
        details = client.get_string_details("button-colour", "unset",
                                             EvaluationContext(targeting_key=user))
        want = expected_variant("button-colour", user, rollout)
        assert details.reason == Reason.SPLIT, details
        assert details.value == want, f"{user}: got {details.value}, flagd's bucketing says {want}"
        seen[want] = seen.get(want, 0) + 1
    check(set(seen) == {"red", "green", "blue"},
          f"rollout: 300 users each got flagd's bucket, spread {seen}")

    details = client.get_boolean_details("no-such-flag", True, alice)
    check(details.value is True and details.error_code == ErrorCode.FLAG_NOT_FOUND
          and details.reason == Reason.ERROR,
          f"missing flag: default value, {details.error_code}")

    details = client.get_string_details("button-colour", "fallback", EvaluationContext())
    check(details.value == "fallback" and details.error_code == ErrorCode.TARGETING_KEY_MISSING,
          f"rollout without a targeting key: {details.error_code}")

    details = client.get_integer_details("theme", 7, alice)
    check(details.value == 7 and details.error_code == ErrorCode.TYPE_MISMATCH,
          f"type mismatch: default value, {details.error_code}")

    put("new-checkout", {"enabled": False, "metadata": {"owner": "web"}})
    details = client.get_boolean_details("new-checkout", True, alice)
    check(details.value is False and details.reason == Reason.DISABLED
          and details.flag_metadata.get("flagVersion") == 2,
          "a toggle is seen by the very next evaluation")

    # Leave a shared database as we found it (but for the environment's name in the listing).
    status, body = http("GET", f"{base}/v1/environments/{environment}/flags", headers=admin)
    for flag in json.loads(body)["flags"]:
        http("DELETE", f"{base}/v1/environments/{environment}/flags/{flag['key']}", headers=admin)


if __name__ == "__main__":
    sys.exit(main())
