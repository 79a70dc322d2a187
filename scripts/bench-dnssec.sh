#!/usr/bin/env bash
# DO=1 throughput against a signed zone: lienthong signing it itself (dnssec = true) vs NSD
# serving the same zone pre-signed by ldns-signzone (NSEC3, no extra iterations, no salt,
# ECDSA P-256, like lienthong). Zone and query mix are the shared bench's (dns-auth.sh
# --zone-only: 75% existing A, 15% NXDOMAIN, 5% MX, 5% CNAME); each query is sent with DO=1
# (dnsperf -D). Prints answers per server CPU-second (user+system ticks of the process on the
# port), the measure that holds on a loaded machine, per run and as medians.
#
# usage: scripts/bench-dnssec.sh [-n RECORDS] [-l SECONDS] [-r ROUNDS] [-c CLIENTS] [-q OUTSTANDING]
# needs: dnsperf, dig, nsd, ldns-keygen, ldns-signzone, ss; a release build of the DNS example:
#   cargo build --release -p lienthong-dns --example serve
set -euo pipefail

NREC=10000 DUR=10 ROUNDS=3 CLIENTS=20 OUTST=1000
while (($#)); do
  case "$1" in
    -n) NREC=$2; shift 2;; -l) DUR=$2; shift 2;; -r) ROUNDS=$2; shift 2;;
    -c) CLIENTS=$2; shift 2;; -q) OUTST=$2; shift 2;;
    *) sed -n '2,12p' "$0" >&2; exit 2;;
  esac
done
REPO=$(cd "$(dirname "$0")/.." && pwd)
BENCH=${BENCH:-}
for candidate in "$REPO/../shared/bench/dns-auth.sh" "$REPO/../../shared/bench/dns-auth.sh"; do
  [[ -n $BENCH || ! -x $candidate ]] || BENCH=$candidate
done
[[ -n $BENCH ]] || { echo "cannot find shared/bench/dns-auth.sh; set BENCH=" >&2; exit 1; }
SERVE=${SERVE:-${CARGO_TARGET_DIR:-$REPO/target}/release/examples/serve}
[[ -x $SERVE ]] || { echo "missing $SERVE: cargo build --release -p lienthong-dns --example serve" >&2; exit 1; }
for tool in dnsperf dig nsd ldns-keygen ldns-signzone ss; do
  command -v $tool >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

ZONE=example.gov.vn LPORT=${LPORT:-5311} NPORT=${NPORT:-5312}
W=$(mktemp -d "${TMPDIR:-/tmp}/dnssec-bench.XXXXXX"); chmod 755 "$W"
PIDS=()
cleanup() {
  set +e
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
  rm -rf "$W"
}
trap cleanup EXIT

mkdir -p "$W/zone" "$W/nsd" "$W/state"
"$BENCH" -z "$ZONE" -n "$NREC" --zone-out "$W/zone/$ZONE.zone" --zone-only >/dev/null
QUERIES="$W/zone/$ZONE.zone.queries"

ready() { dig @127.0.0.1 -p "$1" +time=1 +tries=1 +norec "$ZONE" SOA 2>/dev/null | grep -q 'status: NOERROR'; }
wait_ready() { for _ in $(seq 600); do ready "$1" && return 0; sleep 0.2; done; echo "nothing answers on $1" >&2; exit 1; }

cat >"$W/lienthong.toml" <<EOF
[server]
hostname = "ns1.$ZONE"
addresses = ["127.0.0.1"]
state_dir = "$W/state"

[dns]
listen = ["127.0.0.1:$LPORT"]
rate_limit = 0

[[dns.zone]]
name = "$ZONE"
file = "$W/zone/$ZONE.zone"
dnssec = true

[mail]
enabled = false

[conference]
enabled = false
EOF
started=$(date +%s.%N)
"$SERVE" "$W/lienthong.toml" >"$W/lienthong.log" 2>&1 &
PIDS+=($!)
wait_ready "$LPORT"
echo "# lienthong loaded and signed $NREC+ names in $(echo "$(date +%s.%N) - $started" | bc) s"

(cd "$W/nsd" && ZSK=$(ldns-keygen -a ECDSAP256SHA256 "$ZONE") && KSK=$(ldns-keygen -a ECDSAP256SHA256 -k "$ZONE") \
  && ldns-signzone -n -t 0 -f "$W/nsd/$ZONE.signed" "$W/zone/$ZONE.zone" "$ZSK" "$KSK")
cat >"$W/nsd/nsd.conf" <<EOF
server:
  ip-address: 127.0.0.1
  port: $NPORT
  do-ip6: no
  server-count: 1
  reuseport: yes
  username: ""
  chroot: ""
  database: ""
  zonesdir: "$W/nsd"
  zonelistfile: "$W/nsd/zone.list"
  xfrdfile: "$W/nsd/xfrd.state"
  xfrdir: "$W/nsd"
  pidfile: "$W/nsd/nsd.pid"
  logfile: "$W/nsd/nsd.log"
  verbosity: 1
  rrl-ratelimit: 0
  rrl-whitelist-ratelimit: 0
remote-control:
  control-enable: no
zone:
  name: "$ZONE"
  zonefile: "$W/nsd/$ZONE.signed"
EOF
nsd -d -c "$W/nsd/nsd.conf" >>"$W/nsd/nsd.log" 2>&1 &
PIDS+=($!)
wait_ready "$NPORT"

# Both must give signed answers and NSEC3 proofs to DO queries before anything is measured.
for port in "$LPORT" "$NPORT"; do
  d="dig @127.0.0.1 -p $port +dnssec +norec +time=2 +tries=2"
  $d "host1.$ZONE" A | grep -q "RRSIG"$'\t'"A 13 " || { echo "no signed A from port $port" >&2; exit 1; }
  out=$($d "nx-missing.$ZONE" A)
  grep -q 'status: NXDOMAIN' <<<"$out" && grep -q 'NSEC3' <<<"$out" || { echo "no NSEC3 NXDOMAIN from $port" >&2; exit 1; }
done
echo "# verified signed answers and NSEC3 NXDOMAIN proofs from lienthong (:$LPORT) and NSD (:$NPORT)"

cpu_ticks() {
  local t=0 pid
  for pid in $(ss -Hlunp "sport = :$1" | grep -o 'pid=[0-9]*' | cut -d= -f2 | sort -u); do
    t=$(( t + $(sed 's/.*) //' "/proc/$pid/stat" | awk '{print $12 + $13}') ))
  done
  echo "$t"
}
HZ=$(getconf CLK_TCK)
run() {
  local name=$1 port=$2 c0 c1 out
  c0=$(cpu_ticks "$port")
  out=$(dnsperf -D -s 127.0.0.1 -p "$port" -d "$QUERIES" -l "$DUR" -c "$CLIENTS" -q "$OUTST" 2>&1)
  c1=$(cpu_ticks "$port")
  awk -v name="$name" -v cpu="$(( c1 - c0 ))" -v hz="$HZ" -v out="$W/res.$name" '
    /Queries completed:/ {done=$3} /Queries lost:/ {lost=$3} /Queries per second:/ {qps=$4}
    /Response codes:/ {sub(/^ *Response codes: */, ""); rc=$0} /Average packet size/ {size=$NF}
    END {apc = cpu > 0 ? done / (cpu / hz) : 0
         printf "%-9s %8.0f qps  lost %d  resp %s B  server cpu %.2f s  %.0f answers/cpu-s  [%s]\n", name, qps, lost, size, cpu / hz, apc, rc
         printf "%f %d\n", apc, lost >> out}' <<<"$out"
}
median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "# dnsperf -D (DO=1): ${DUR}s/run, -c $CLIENTS -q $OUTST; $ROUNDS rounds; load $(cut -d' ' -f1-3 /proc/loadavg)"
for ((r = 1; r <= ROUNDS; r++)); do
  echo "-- round $r"
  if ((r % 2)); then run lienthong "$LPORT"; run nsd "$NPORT"; else run nsd "$NPORT"; run lienthong "$LPORT"; fi
done
L=$(cut -d' ' -f1 "$W/res.lienthong" | median) N=$(cut -d' ' -f1 "$W/res.nsd" | median)
echo "== median answers/cpu-s: lienthong $L  nsd $N  ratio $(awk -v a="$L" -v b="$N" 'BEGIN {printf "%.2f", a / b}')  (load $(cut -d' ' -f1-3 /proc/loadavg))"
echo "   lost: lienthong $(awk '{s+=$2} END {print s}' "$W/res.lienthong")  nsd $(awk '{s+=$2} END {print s}' "$W/res.nsd")"
