#!/usr/bin/env bash
# Conference load, side by side: lienthong (release build) and Janus's VideoRoom under the
# same simulated sites (target/release/lienthong-load), in one run, rounds alternating which
# server goes first. Everything runs in a private network namespace (a veth address
# 10.77.0.1, local traffic only), so nothing listens on the machine's real interfaces:
#   fanout-N   1 publisher (640x360 VP8 600 kbit/s + Opus) and N = 2, 4, 8 receivers
#   ingest     1 publisher nobody receives
#   meeting12  12 sites, each publishing and receiving everyone (Janus: three-layer
#              simulcast; lienthong: single layer, or simulcast with LIENTHONG_SIMULCAST=1)
#   room50     lienthong only: 12 sites with video, 38 with audio only, everyone receiving
#   room50-muted  the same, the 38 audio-only sites with their microphones switched off
#              (not in the default list)
# Reports the SFU process's CPU per packet (from /proc/PID/stat), loss and latency, and the
# medians over the rounds.
#
# Usage: scripts/bench-conference.sh [-r ROUNDS] [-d SECONDS] [-s "SCENARIOS"] [-j]   (as root)
#   -j: lienthong only (no Janus); SKIP_BUILD=1 uses the release binaries already built
# Needs: janus (Debian package), iproute2, python3. Results: $OUT (default /tmp/bench-conference).
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=3 DURATION=20 SCENARIOS="fanout-2 fanout-4 fanout-8 ingest meeting12 room50" SERVERS="lienthong janus"
while getopts "r:d:s:j" option; do
  case $option in
    r) ROUNDS=$OPTARG ;; d) DURATION=$OPTARG ;; s) SCENARIOS=$OPTARG ;; j) SERVERS=lienthong ;;
    *) echo "usage: $0 [-r ROUNDS] [-d SECONDS] [-s SCENARIOS]" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "needs root (it creates a network namespace)" >&2; exit 1; }
[[ $SERVERS != *janus* ]] || command -v janus >/dev/null || { echo "janus not installed (apt-get install janus)" >&2; exit 1; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
[[ -n ${SKIP_BUILD:-} ]] || cargo build --release -q -p lienthong -p lienthong-load
# LIENTHONG_BINARY measures another build (e.g. another branch's) with the same load.
LIENTHONG=${LIENTHONG_BINARY:-$CARGO_TARGET_DIR/release/lienthong} LOAD=$CARGO_TARGET_DIR/release/lienthong-load
OUT=${OUT:-/tmp/bench-conference}
rm -rf "$OUT"; mkdir -p "$OUT"
NETNS=ltbench-$$ ADDRESS=10.77.0.1
LIENTHONG_PID="" JANUS_PID=""

cleanup() {
  for pid in $LIENTHONG_PID $JANUS_PID; do kill "$pid" 2>/dev/null || true; done
  for pid in $LIENTHONG_PID $JANUS_PID; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  ip netns del "$NETNS" 2>/dev/null || true
}
trap cleanup EXIT
in_ns() { ip netns exec "$NETNS" "$@"; }

ip netns add "$NETNS"
in_ns ip link set lo up
in_ns ip link add bench0 type veth peer name bench1
in_ns ip addr add "$ADDRESS/24" dev bench0
in_ns ip link set bench0 up
in_ns ip link set bench1 up

# --- lienthong ---------------------------------------------------------------------------
SITES=$(python3 -c 'print(", ".join(f"\"Xã {i}\"" for i in range(1, 61)))')
cat >"$OUT/lienthong.toml" <<EOF
[server]
hostname = "hub.ninhthuan.gov.vn"
addresses = ["$ADDRESS"]
state_dir = "$OUT/lienthong-state"
[admin]
listen = "127.0.0.1:19390"
[dns]
enabled = false
[mail]
enabled = false
[conference]
enabled = true
listen = "127.0.0.1:18080"
media_port = 18000
[[conference.room]]
name = "giao-ban"
title = "Họp giao ban UBND tỉnh"
pin = "246810"
chair_pin = "135790"
sites = [$SITES]
max_participants = 60
EOF
# Started with `ip netns exec` directly (not through a shell function), so $! is the
# server's own PID: ip execs it.
ip netns exec "$NETNS" "$LIENTHONG" run --config "$OUT/lienthong.toml" >"$OUT/lienthong.log" 2>&1 &
LIENTHONG_PID=$!

# --- Janus: its own config in $OUT, WebSocket transport on the namespace's loopback --------
JANUS_LIB=/usr/lib/x86_64-linux-gnu/janus
[[ -d $JANUS_LIB ]] || JANUS_LIB=$(dirname "$(dpkg -L janus | grep -m1 '/plugins/libjanus_videoroom.so$')")/..
disabled_plugins=$(find "$JANUS_LIB/plugins" -name 'libjanus_*.so' ! -name libjanus_videoroom.so -printf '%f,')
disabled_transports=$(find "$JANUS_LIB/transports" -name 'libjanus_*.so' ! -name libjanus_websockets.so -printf '%f,')
mkdir -p "$OUT/janus"
cat >"$OUT/janus/janus.jcfg" <<EOF
general: {
	configs_folder = "$OUT/janus"
	plugins_folder = "$JANUS_LIB/plugins"
	transports_folder = "$JANUS_LIB/transports"
	events_folder = "$JANUS_LIB/events"
	loggers_folder = "$JANUS_LIB/loggers"
	debug_level = 4
	session_timeout = 120
}
media: {
	rtp_port_range = "30000-39999"
}
nat: {
	ice_enforce_list = "bench0"
	ignore_mdns = true
}
plugins: {
	disable = "${disabled_plugins%,}"
}
transports: {
	disable = "${disabled_transports%,}"
}
events: {
}
loggers: {
}
EOF
cat >"$OUT/janus/janus.transport.websockets.jcfg" <<EOF
general: {
	json = "plain"
	ws = true
	ws_port = 18188
	ws_ip = "127.0.0.1"
	wss = false
}
admin: {
	admin_ws = false
}
EOF
printf 'general: {\n}\n' >"$OUT/janus/janus.plugin.videoroom.jcfg"
if [[ $SERVERS == *janus* ]]; then
  ip netns exec "$NETNS" janus -C "$OUT/janus/janus.jcfg" -F "$OUT/janus" -o >"$OUT/janus.log" 2>&1 &
  JANUS_PID=$!
fi

wait_port() { # PORT NAME PID
  for _ in $(seq 600); do
    in_ns bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0
    kill -0 "$3" 2>/dev/null || { echo "$2 exited; see $OUT/$2.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "$2 did not listen on $1" >&2; exit 1
}
wait_port 18080 lienthong "$LIENTHONG_PID"
[[ -z $JANUS_PID ]] || wait_port 18188 janus "$JANUS_PID"
for pid in $LIENTHONG_PID $JANUS_PID; do
  exe=$(readlink /proc/"$pid"/exe)
  [[ $exe == "$(readlink -f "$LIENTHONG")" || $exe == */janus ]] ||
    { echo "PID $pid is not the server ($exe)" >&2; exit 1; }
done
JANUS_VERSION=$(janus --version 2>/dev/null | head -1 || true)
echo "== lienthong $($LIENTHONG --version 2>/dev/null | head -1), ${JANUS_VERSION:-janus}; $(nproc) CPUs"
echo "== load before: $(cut -d' ' -f1-3 /proc/loadavg)"

ROOM=100
run() { # SERVER SCENARIO ROUND
  local server=$1 scenario=$2 round=$3 arguments=()
  case $scenario in
    fanout-*) arguments=(--video-publishers 1 --receivers "${scenario#fanout-}") ;;
    ingest) arguments=(--video-publishers 1 --receivers 0) ;;
    meeting12) arguments=(--video-publishers 12 --receivers 0 --meeting)
      if [[ $server == janus || ${LIENTHONG_SIMULCAST:-0} == 1 ]]; then arguments+=(--simulcast); fi ;;
    room50) [[ $server == lienthong ]] || return 0
      arguments=(--video-publishers 12 --audio-publishers 38 --receivers 0 --meeting --simulcast --join-interval-ms 1000 --setup-timeout 180) ;;
    room50-listen) [[ $server == lienthong ]] || return 0
      arguments=(--video-publishers 12 --audio-publishers 0 --receivers 38 --meeting --simulcast --join-interval-ms 1000 --setup-timeout 180) ;;
    room50-muted) [[ $server == lienthong ]] || return 0
      arguments=(--video-publishers 12 --audio-publishers 38 --receivers 0 --meeting --mute-audio-only --join-interval-ms 1000 --setup-timeout 180) ;;
  esac
  if [[ $server == lienthong ]]; then
    arguments+=(--server lienthong --url http://127.0.0.1:18080 --pin 246810 --server-pid "$LIENTHONG_PID")
  else
    ROOM=$((ROOM + 1))
    arguments+=(--server janus --url ws://127.0.0.1:18188 --janus-room "$ROOM" --server-pid "$JANUS_PID")
  fi
  local result="$OUT/$scenario.$server.$round.json"
  if in_ns "$LOAD" "${arguments[@]}" --client-ip "$ADDRESS" --duration "$DURATION" --json >"$result" 2>"$result.err"; then
    python3 - "$result" "$scenario" "$(cut -d' ' -f1 /proc/loadavg)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
f = lambda v, d=1: "-" if v is None else f"{v:.{d}f}"
print(f"{sys.argv[2]:<10} {r['target']:<9} recv {r['received_per_second']:8.0f} pkt/s  loss {100*r['loss_ratio']:.3f}%  "
      f"latency p50 {f(r['latency_p50_micros'] and r['latency_p50_micros']/1000, 2)} p99 {f(r['latency_p99_micros'] and r['latency_p99_micros']/1000, 2)} ms  "
      f"cpu {f(100*r['server_cores'] if r['server_cores'] is not None else None)}% core  "
      f"{f(r['server_micros_per_received_packet'])} µs/recv  {f(r['server_micros_per_sent_packet'])} µs/sent  "
      f"streams {r['streams_measured']}/{r['streams_expected']}  load {sys.argv[3]}"
      + ("".join(f"\n    error: {e}" for e in r['errors'])))
PY
  else
    echo "$scenario $server: FAILED ($(tail -1 "$result.err"))"
    rm -f "$result"
  fi
}

for round in $(seq "$ROUNDS"); do
  echo "-- round $round"
  order=$SERVERS; ((round % 2 == 0)) && order=$(echo "$SERVERS" | awk '{for (i = NF; i > 0; i--) printf "%s ", $i}')
  for scenario in $SCENARIOS; do
    for server in $order; do run "$server" "$scenario" "$round"; done
  done
done
echo "== load after: $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$OUT" <<'PY'
import glob, json, os, statistics, sys
out = sys.argv[1]
runs = {}
for path in glob.glob(os.path.join(out, "*.json")):
    scenario, server, round_ = os.path.basename(path)[:-5].split(".")
    runs.setdefault((scenario, server), {})[int(round_)] = json.load(open(path))
def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None
def f(v, d=1):
    return "-" if v is None else f"{v:.{d}f}"
print("== medians over rounds")
print(f"{'scenario':<10} {'server':<9} {'rounds':>6} {'recv pkt/s':>10} {'loss %':>7} {'p50 ms':>7} {'p99 ms':>7} {'% core':>7} {'µs/recv':>8} {'µs/sent':>8}")
for (scenario, server), by_round in sorted(runs.items()):
    rs = list(by_round.values())
    print(f"{scenario:<10} {server:<9} {len(rs):>6} {f(med(r['received_per_second'] for r in rs), 0):>10} "
          f"{f(med(100 * r['loss_ratio'] for r in rs), 3):>7} "
          f"{f(med(r['latency_p50_micros'] and r['latency_p50_micros'] / 1000 for r in rs), 2):>7} "
          f"{f(med(r['latency_p99_micros'] and r['latency_p99_micros'] / 1000 for r in rs), 2):>7} "
          f"{f(med(r['server_cores'] and 100 * r['server_cores'] for r in rs)):>7} "
          f"{f(med(r['server_micros_per_received_packet'] for r in rs)):>8} "
          f"{f(med(r['server_micros_per_sent_packet'] for r in rs)):>8}")
# Marginal cost of a forwarded packet: extra CPU from 2 to 8 receivers over extra packets, per round.
for server in ("lienthong", "janus"):
    low, high = runs.get(("fanout-2", server), {}), runs.get(("fanout-8", server), {})
    slopes = []
    for round_ in sorted(set(low) & set(high)):
        a, b = low[round_], high[round_]
        extra_packets = b["received_packets"] / b["seconds"] - a["received_packets"] / a["seconds"]
        if extra_packets > 0 and a["server_cores"] is not None and b["server_cores"] is not None:
            slopes.append((b["server_cores"] - a["server_cores"]) * 1e6 / extra_packets)
    if slopes:
        print(f"marginal µs per forwarded packet, 2 -> 8 receivers, {server}: {f(statistics.median(slopes))} (rounds: {', '.join(f(s) for s in slopes)})")
for scenario in ("fanout-2", "fanout-4", "fanout-8", "meeting12"):
    l, j = runs.get((scenario, "lienthong")), runs.get((scenario, "janus"))
    if l and j:
        lm = med(r["server_micros_per_received_packet"] for r in l.values())
        jm = med(r["server_micros_per_received_packet"] for r in j.values())
        if lm and jm:
            print(f"ratio lienthong/janus µs per received packet, {scenario}: {lm / jm:.2f}")
l, j = runs.get(("ingest", "lienthong")), runs.get(("ingest", "janus"))
if l and j:
    lm = med(r["server_micros_per_sent_packet"] for r in l.values())
    jm = med(r["server_micros_per_sent_packet"] for r in j.values())
    if lm and jm:
        print(f"ratio lienthong/janus µs per packet taken in, nobody receiving: {lm / jm:.2f}")
PY
