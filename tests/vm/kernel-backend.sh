#!/usr/bin/env bash
# The kernel (netem) backend, end to end, inside a VM whose kernel has netem:
#   sudo scripts/vm-test -- tests/vm/kernel-backend.sh
# A lab with backend = "kernel" comes up; every impaired interface has a netem
# root qdisc that reads back (tc, an independent reader) as configured; ping
# RTT is at least the configured delay in both directions; down leaves nothing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
TB="$PWD/target/release/testbed"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() {
    echo "FAIL: $*" >&2
    exit 1
}

cat >"$work/k.toml" <<'TOML'
[lab]
name = "vmk"
backend = "kernel"
seed = 7

[profile.wan]
delay = "20ms"
rate = "10mbit"
limit = 500

[profile.radio]
delay = "5ms"
jitter = "1ms"
distribution = "normal"
loss = "1%"

[[node]]
name = "a"
kind = "host"

[[node]]
name = "b"
kind = "host"

[[node]]
name = "c"
kind = "host"

[[link]]
a = "a"
b = "b"
profile = "wan"

[[segment]]
name = "cell"
members = ["b", "c"]
profile = "radio"
TOML

"$TB" up "$work/k.toml"
"$TB" status vmk | tee "$work/status"
grep -q "impairments: kernel (netem)" "$work/status" || fail "status does not report the kernel backend"

# Read the qdiscs back with tc.
qd() { tc -n "tb-vmk.$1" qdisc show dev "$2"; }
for end in "a eth0" "b eth1"; do
    # shellcheck disable=SC2086
    q=$(qd $end)
    echo "$end: $q"
    [[ "$q" == *"netem 1: root"* ]] || fail "$end: no netem root qdisc: $q"
    [[ "$q" == *"limit 500"* ]] || fail "$end: limit not 500: $q"
    [[ "$q" == *"delay 20ms"* ]] || fail "$end: delay not 20ms: $q"
    [[ "$q" == *"rate 10Mbit"* ]] || fail "$end: rate not 10Mbit: $q"
done
for end in "b eth0" "c eth0"; do
    # shellcheck disable=SC2086
    q=$(qd $end)
    echo "$end: $q"
    [[ "$q" == *"delay 5ms  1ms"* || "$q" == *"delay 5ms 1ms"* ]] || fail "$end: delay/jitter not 5ms 1ms: $q"
    [[ "$q" == *"loss 1%"* ]] || fail "$end: loss not 1%: $q"
done

# RTT a <-> b is at least 2 x 20 ms (each end delays its own egress).
b_addr=$("$TB" exec vmk b -- ip -4 -o addr show dev eth1 | awk '{print $4}' | cut -d/ -f1)
out=$("$TB" exec vmk a -- ping -c 8 -i 0.2 "$b_addr")
echo "$out" | tail -2
min=$(echo "$out" | awk -F'[/ ]' '/^rtt/ {print $7}')
[[ -n "$min" ]] || fail "no RTT summary"
awk -v m="$min" 'BEGIN { exit !(m >= 40.0) }' || fail "min RTT $min ms < 40 ms configured"

# Runtime change in place: 20 ms -> 50 ms on a's side; link show reads it back.
"$TB" link set vmk a b --dir a-to-b --delay 50ms --loss 0%
q=$(qd a eth0)
[[ "$q" == *"delay 50ms"* && "$q" == *"rate 10Mbit"* ]] || fail "link set not applied (or rate lost): $q"
"$TB" link show vmk a b | tee "$work/show"
grep -q "^a .* 50ms" "$work/show" || fail "link show does not report 50ms for a"
out=$("$TB" exec vmk a -- ping -c 6 -i 0.2 "$b_addr")
min=$(echo "$out" | awk -F'[/ ]' '/^rtt/ {print $7}')
awk -v m="$min" 'BEGIN { exit !(m >= 70.0) }' || fail "after link set, min RTT $min ms < 70 ms"
echo "after link set: min RTT $min ms"

# Cut and restore.
"$TB" link down vmk a b
if "$TB" exec vmk a -- ping -c 2 -W 1 "$b_addr" >/dev/null 2>&1; then fail "ping works with the link down"; fi
"$TB" link up vmk a b
ok=0
for _ in 1 2 3 4 5 6 7 8 9 10; do
    if "$TB" exec vmk a -- ping -c 1 -W 1 "$b_addr" >/dev/null 2>&1; then ok=1; break; fi
done
[[ "$ok" == 1 ]] || fail "link up did not restore traffic"

"$TB" down vmk
left=$(ip netns list | grep -c '^tb-vmk' || true)
[[ "$left" == 0 ]] || fail "$left namespaces left"
echo "kernel backend: PASS"
