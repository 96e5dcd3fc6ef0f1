#!/usr/bin/env bash
# Benchmarks RedisCache against the floor of the Redis server it talks to.
#
# Starts a private redis-server, runs the criterion bench `flag-redis/benches/cache.rs`
# (get / get_flag / set for 10, 100, 1,000 flags, one client, one call at a time), then
# redis-benchmark with one client on the very same hashes (HGETALL for get, HMGET <flag> __meta
# for get_flag), and prints both per call with their ratio.
set -euo pipefail
cd "$(dirname "$0")/.."

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
dir=$(mktemp -d)
redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no --daemonize yes \
  --pidfile "$dir/redis.pid" --dir "$dir" --logfile "$dir/redis.log"
trap 'kill "$(cat "$dir/redis.pid")" 2>/dev/null; rm -rf "$dir"' EXIT
until redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.05; done

REDIS_URL="redis://127.0.0.1:$port" BENCH_KEY_PREFIX=bench \
  cargo bench -p flag-redis --bench cache -- --noplot >"$dir/criterion.log" 2>&1 \
  || { cat "$dir/criterion.log"; exit 1; }

floor() { # per-call microseconds of one redis-benchmark command, single client
  redis-benchmark -p "$port" -c 1 -n "${BENCH_N:-20000}" -q "$@" \
    | tr '\r' '\n' | grep 'requests per second' | tail -n 1 \
    | python3 -c 'import sys, re; rps = float(re.search(r"([0-9.]+) requests per second", sys.stdin.read()).group(1)); print(f"{1e6 / rps:.1f}")'
}

printf '%-9s %6s %12s %14s %7s\n' call flags "ours (µs)" "redis (µs)" ratio
for size in 10 100 1000; do
  key="bench:{bench-$size}"
  for call in get get_flag set; do
    ours=$(python3 -c "import json; print(f'{json.load(open(\"target/criterion/redis/$call/$size/new/estimates.json\"))[\"mean\"][\"point_estimate\"] / 1000:.1f}')")
    case $call in
      get) redis=$(floor HGETALL "$key"); what="HGETALL" ;;
      get_flag) redis=$(floor HMGET "$key" flag-00000 __meta); what="HMGET" ;;
      set) redis="-"; what="(Lua script; no raw floor)" ;;
    esac
    ratio=$([ "$redis" = "-" ] && echo "-" || python3 -c "print(f'{$ours / $redis:.2f}x')")
    printf '%-9s %6s %12s %14s %7s  %s\n' "$call" "$size" "$ours" "$redis" "$ratio" "$what"
  done
done
