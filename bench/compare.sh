#!/usr/bin/env bash
# Measures Tern, Prosody (stock and with the generational GC) and ejabberd
# one after another on this machine with the same load generator
# (tern-load), the same domain, users and settings (TLS on, archive off,
# in-band registration for the users), and prints them side by side with
# the ratios of Tern to each.
#
#   bench/compare.sh [--quick] [--servers "tern prosody prosody-gen ejabberd"]
#       [--scenarios "throughput latency connections logins archive federation both-cores"]
#       [--key rsa|ecdsa]
#
# Each server runs pinned to CPU 0 and the generator to CPU 1 (taskset), a
# fresh server per scenario. Scenarios: throughput (saturation, then
# latency at half that load, three runs of it: the median run's p99 is
# the figure, as one noisy stretch of a shared machine would otherwise
# decide it), latency (p99 at the same fixed offered loads
# for every server), connections (server RSS at two levels), logins/s,
# throughput with the archive on (Tern's, Prosody's mod_mam with its
# default storage, ejabberd's mod_mam in Mnesia), federation (two servers
# of each kind for a.test and b.test found through dnsmasq, certificates
# from the run's CA, both on CPU 0, pairs split across them); for Tern
# also throughput on both cores (sharing CPU 1 with the generator). Every
# server gets the same certificate, issued by a CA made here: RSA-2048 by
# default, `--key ecdsa` for P-256 (what certbot issues by default).
# Results: a table, and JSON lines in
# target/bench-run/<time>/results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."

SERVERS="tern prosody prosody-gen ejabberd"
SCENARIOS="throughput latency connections logins archive federation both-cores"
KEY=rsa
PAIRS=100 WINDOW=16 MEASURE=10 WARMUP=2 LEVELS=2000,15000 WORKERS=32 LOGIN_SECONDS=10
# Half-load latency runs per server; the median run's p99 is the figure.
LATENCY_RUNS=3
RATES="2000 5000 10000"
while (($#)); do
    case "$1" in
        --quick) PAIRS=10 MEASURE=2 WARMUP=1 LEVELS=100,400 WORKERS=8 LOGIN_SECONDS=2 RATES=2000
            LATENCY_RUNS=1 ;;
        --servers) SERVERS="$2"; shift ;;
        --scenarios) SCENARIOS="$2"; shift ;;
        --key) KEY="$2"; shift ;;
        *) echo "usage: $0 [--quick] [--servers \"tern prosody prosody-gen ejabberd\"]" \
                "[--scenarios \"throughput latency connections logins archive federation both-cores\"]" \
                "[--key rsa|ecdsa]" >&2; exit 2 ;;
    esac
    shift
done

# shellcheck source=scripts/apt.sh
source scripts/apt.sh
ensure_packages prosody lua-unbound ejabberd openssl dnsmasq-base util-linux

cargo build --release -p tern-server -p tern-bench
RUN="$PWD/target/bench-run/$(date +%Y%m%d-%H%M%S)"
mkdir -p "$RUN"
JSON="$RUN/results.jsonl"
DOMAIN=bench.test
ADDR=127.0.0.1
PORT=25222
ulimit -n "$(ulimit -Hn)"

if (($(nproc) >= 2)); then
    ON_SERVER=(taskset -c 0) ON_LOAD=(taskset -c 1)
else
    ON_SERVER=() ON_LOAD=()
fi

case "$KEY" in
    rsa) NEWKEY=(-newkey rsa:2048) ;;
    ecdsa) NEWKEY=(-newkey ec -pkeyopt ec_paramgen_curve:P-256) ;;
    *) echo "--key is rsa or ecdsa" >&2; exit 2 ;;
esac
openssl req -x509 "${NEWKEY[@]}" -nodes -days 7 -subj "/CN=Tern bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -keyout "$RUN/ca-key.pem" -out "$RUN/ca.pem" 2>/dev/null
openssl req -new "${NEWKEY[@]}" -nodes -subj "/CN=$DOMAIN" \
    -keyout "$RUN/key.pem" -out "$RUN/cert.csr" 2>/dev/null
printf 'subjectAltName=DNS:%s,DNS:a.test,DNS:b.test,IP:%s\nbasicConstraints=CA:FALSE\n' \
    "$DOMAIN" "$ADDR" >"$RUN/cert.ext"
openssl x509 -req -in "$RUN/cert.csr" -CA "$RUN/ca.pem" -CAkey "$RUN/ca-key.pem" \
    -CAcreateserial -days 7 -extfile "$RUN/cert.ext" -out "$RUN/cert.pem" 2>/dev/null
chmod 644 "$RUN/key.pem"

SERVER_PID= PEER_PID= DNS_PID=
LABEL=
DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)

wait_listening() { # [port]
    local port=${1:-$PORT}
    for _ in $(seq 1 300); do
        if (exec 3<>"/dev/tcp/$ADDR/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "$LABEL did not start listening on $ADDR:$port" >&2
    return 1
}

start_tern() { # [extra TOML]
    start_tern_as tern "$DOMAIN" "$PORT" "[federation]
enabled = false
${1:-[archive]
enabled = false}"
    SERVER_PID=$TERN_PID
}

# Starts a Tern server (pid in TERN_PID) for `domain` with c2s on `port`
# and its other listeners on the ports after it.
start_tern_as() { # name domain port extra-TOML
    local dir="$RUN/$1" domain=$2 port=$3
    rm -rf "$dir"; mkdir -p "$dir"
    cat >"$dir/tern.toml" <<EOF
domain = "$domain"
data_dir = "$dir/data"
registration = "open"
[listen]
c2s = "$ADDR:$port"
c2s_tls = "$ADDR:$((port + 1))"
upload = "$ADDR:$((port + 2))"
s2s = "$ADDR:$((port + 3))"
s2s_tls = "$ADDR:$((port + 4))"
[tls]
cert = "$RUN/cert.pem"
key = "$RUN/key.pem"
[limits]
max_connections_per_ip = 100000
auth_failures_per_minute = 100000
$4
EOF
    # Warnings only, as Prosody and ejabberd are configured below.
    TERN_LOG=warn "${ON_SERVER[@]}" target/release/tern-server --config "$dir/tern.toml" \
        >"$dir/server.log" 2>&1 &
    TERN_PID=$!
    wait_listening "$port"
}

# dnsmasq on PORT+20 (pid in DNS_PID) with the records of a.test (s2s on
# PORT+3) and b.test (s2s on PORT+13), for the federation scenario.
start_dns() {
    local dns="$RUN/dns"
    mkdir -p "$dns"
    cat >"$dns/dnsmasq.conf" <<EOF
port=$((PORT + 20))
listen-address=$ADDR
bind-interfaces
no-resolv
no-hosts
no-poll
local=/test/
address=/a.test/$ADDR
address=/b.test/$ADDR
srv-host=_xmpp-server._tcp.a.test,a.test,$((PORT + 3))
srv-host=_xmpp-server._tcp.b.test,b.test,$((PORT + 13))
EOF
    "$DNSMASQ" --no-daemon --conf-file="$dns/dnsmasq.conf" --pid-file= >"$dns/log" 2>&1 &
    DNS_PID=$!
}

# Two federating servers of the current kind, a.test (c2s on PORT) and
# b.test (on PORT+10), found through dnsmasq; SERVER_PID is a.test's,
# PEER_PID b.test's. Both run on the server core.
start_pair() {
    start_dns
    case "$LABEL" in
        tern) start_tern_pair ;;
        prosody | prosody-gen)
            local gc=no
            [[ "$LABEL" == prosody-gen ]] && gc=yes
            start_prosody_as prosody-b b.test $((PORT + 10)) "$gc" no yes
            PEER_PID=$SERVER_PID
            start_prosody_as prosody-a a.test "$PORT" "$gc" no yes
            ;;
        ejabberd)
            start_ejabberd_as ejabberd-b b.test $((PORT + 10)) no yes
            PEER_PID=$SERVER_PID
            start_ejabberd_as ejabberd-a a.test "$PORT" no yes
            ;;
    esac
}

start_tern_pair() {
    local federation="[federation]
enabled = true
nameserver = \"$ADDR:$((PORT + 20))\"
ca_file = \"$RUN/ca.pem\"
[archive]
enabled = false"
    start_tern_as tern-b b.test $((PORT + 10)) "$federation"
    PEER_PID=$TERN_PID
    start_tern_as tern-a a.test "$PORT" "$federation"
    SERVER_PID=$TERN_PID
}

start_prosody() { # generational? [archive?]
    start_prosody_as prosody "$DOMAIN" "$PORT" "$1" "${2:-no}" no
}

# Starts Prosody (pid in SERVER_PID) for `domain` with c2s on `port` and,
# when federating, s2s on port+3 with certificate authentication and
# peers found through start_dns's dnsmasq.
start_prosody_as() { # name domain port generational? archive? federation?
    local dir="$RUN/$1" domain=$2 port=$3
    rm -rf "$dir"; mkdir -p "$dir/data" "$dir/certs"
    cp "$RUN/cert.pem" "$dir/certs/$domain.crt"; cp "$RUN/key.pem" "$dir/certs/$domain.key"
    local gc=""
    [[ "$4" == yes ]] && gc='gc = { mode = "generational" }'
    local mam="" archive_policy=""
    if [[ "$5" == yes ]]; then
        mam='"mam";'
        archive_policy='default_archive_policy = true'
    fi
    local s2s_ports="" federation="" dialback=""
    if [[ "$6" == yes ]]; then
        s2s_ports=$((port + 3))
        dialback='"dialback";'
        federation="s2s_require_encryption = true
s2s_secure_auth = true
ssl = { cafile = \"$RUN/ca.pem\" }
unbound = {
    resolvconf = false; hoststxt = false;
    forward = { \"$ADDR@$((PORT + 20))\" };
    options = { [\"do-not-query-localhost:\"] = \"no\"; [\"local-zone:\"] = \"test. transparent\" };
}"
    fi
    cat >"$dir/prosody.cfg.lua" <<EOF
local base = "$dir"
run_as_root = true
pidfile = base.."/prosody.pid"; data_path = base.."/data"; certificates = base.."/certs"
admin_socket = base.."/prosody.sock"
interfaces = { "$ADDR" }; local_interfaces = { "$ADDR" }
c2s_ports = { $port }; s2s_ports = { $s2s_ports }; http_ports = { }; https_ports = { }
c2s_direct_tls_ports = { }; s2s_direct_tls_ports = { }
log = { warn = base.."/prosody.log" }
$federation
authentication = "internal_hashed"
c2s_require_encryption = true
allow_registration = true
min_seconds_between_registrations = 0
registration_throttle_max = 1000000
$gc
modules_enabled = { "disco"; "roster"; "saslauth"; "tls"; "register"; "ping"; $mam $dialback }
$archive_policy
VirtualHost "$domain"
EOF
    "${ON_SERVER[@]}" prosody -F --config "$dir/prosody.cfg.lua" >"$dir/stdout.log" 2>&1 &
    SERVER_PID=$!
    wait_listening "$port"
}

start_ejabberd() { # [archive?]
    start_ejabberd_as ejabberd "$DOMAIN" "$PORT" "${1:-no}" no
}

# Starts ejabberd (pid of its Erlang VM in SERVER_PID) for `domain` with
# c2s on `port` and, when federating, s2s on port+3 with peers found
# through start_dns's dnsmasq (Erlang's resolver takes the SRV targets'
# addresses from a hosts file, bound over /etc/hosts in a private mount
# namespace).
start_ejabberd_as() { # name domain port archive? federation?
    local dir="$RUN/$1" domain=$2 port=$3 node="tern-bench-$1"
    local mam=""
    [[ "$4" == yes ]] && mam='  mod_mam:
    default: always'
    local s2s="" launch=()
    rm -rf "$dir"; mkdir -p "$dir/conf" "$dir/logs" "$dir/spool"
    if [[ "$5" == yes ]]; then
        s2s="  -
    port: $((port + 3))
    ip: \"$ADDR\"
    module: ejabberd_s2s_in
s2s_use_starttls: required
ca_file: \"$RUN/ca.pem\""
        mam="$mam
  mod_s2s_dialback: {}"
        printf '{resolv_conf, ""}.\n{hosts_file, ""}.\n{host, {127,0,0,1}, ["localhost"]}.\n{nameserver, {%s}, %s}.\n{lookup, [file, dns]}.\n' \
            "${ADDR//./,}" $((PORT + 20)) >"$dir/conf/inetrc"
        printf '127.0.0.1 localhost\n%s a.test\n%s b.test\n' "$ADDR" "$ADDR" >"$dir/hosts"
        launch=(unshare --mount sh -c "mount --bind '$dir/hosts' /etc/hosts && exec \"\$@\"" sh)
    fi
    cat "$RUN/cert.pem" "$RUN/key.pem" >"$dir/conf/server.pem"
    cat >"$dir/conf/ejabberdctl.cfg" <<EOF
ERLANG_NODE=$node@localhost
INET_DIST_INTERFACE=127.0.0.1
ERL_EPMD_ADDRESS=127.0.0.1
ERL_DIST_PORT=$((port + 5))
ERL_OPTIONS="+S 1:1"
ERL_MAX_PORTS=65536
EJABBERD_PID_PATH=$dir/spool/ejabberd.pid
EOF
    cat >"$dir/conf/ejabberd.yml" <<EOF
loglevel: warning
hosts:
  - $domain
certfiles:
  - "$dir/conf/server.pem"
listen:
  -
    port: $port
    ip: "$ADDR"
    module: ejabberd_c2s
    starttls_required: true
    shaper: none
    max_stanza_size: 262144
    backlog: 128
$s2s
auth_method: internal
auth_password_format: scram
shaper_rules:
  c2s_shaper: none
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  register:
    allow: all
modules:
  mod_disco: {}
  mod_roster: {}
  mod_ping: {}
  mod_register:
    ip_access: all
    access: register
$mam
registration_timeout: infinity
EOF
    chown -R ejabberd:ejabberd "$dir"
    # Started as the ejabberd user directly (setpriv keeps this shell's
    # open-file limit; ejabberdctl's own su would reset it to 1024).
    HOME="$dir/spool" "${ON_SERVER[@]}" "${launch[@]}" setpriv --reuid=ejabberd \
        --regid=ejabberd --init-groups ejabberdctl --config-dir "$dir/conf" --logs "$dir/logs" \
        --spool "$dir/spool" foreground >"$dir/stdout.log" 2>&1 &
    wait_listening "$port"
    # The measured process is the Erlang VM, not its launcher.
    SERVER_PID=$(pgrep -f "beam.*$node@localhost" | head -1)
}

stop_server() {
    local pids="$SERVER_PID $PEER_PID $DNS_PID"
    for pid in $pids; do kill "$pid" 2>/dev/null || true; done
    # Prosody can wait on an s2s peer that is gone already: what has not
    # stopped within 10 s is killed.
    for _ in $(seq 1 100); do
        local alive=no
        for pid in $pids; do kill -0 "$pid" 2>/dev/null && alive=yes; done
        [[ $alive == no ]] && break
        sleep 0.1
    done
    for pid in $pids; do kill -9 "$pid" 2>/dev/null || true; done
    PEER_PID= DNS_PID=
    pkill -f "beam.*tern-bench-" 2>/dev/null || true
    wait 2>/dev/null || true
    sleep 1
}
trap stop_server EXIT

start() { # [archive?]
    case "$LABEL" in
        tern)
            if [[ "${1:-no}" == yes ]]; then
                start_tern "[archive]
enabled = true"
            else
                start_tern
            fi
            ;;
        prosody) start_prosody no "${1:-no}" ;;
        prosody-gen) start_prosody yes "${1:-no}" ;;
        ejabberd) start_ejabberd "${1:-no}" ;;
    esac
}

load() {
    load_on "$DOMAIN" "$PORT" "$@"
}

load_on() { # domain port tern-load-arguments…
    local domain=$1 port=$2
    shift 2
    "${ON_LOAD[@]}" target/release/tern-load --addr "$ADDR:$port" --domain "$domain" \
        --ca-file "$RUN/ca.pem" --label "$LABEL" --server-pid "$SERVER_PID" --json "$JSON" "$@"
}

wanted() { [[ " $SCENARIOS " == *" $1 "* ]]; }

for LABEL in $SERVERS; do
    echo "== $LABEL"
    if wanted throughput; then
        start
        load register --users $((2 * PAIRS))
        load throughput --pairs "$PAIRS" --window "$WINDOW" --seconds "$MEASURE" --warmup "$WARMUP" \
            --latency-runs "$LATENCY_RUNS"
        stop_server
    fi
    if wanted latency; then
        start
        load register --users $((2 * PAIRS))
        for rate in $RATES; do
            load --record-as "latency-$rate" throughput --pairs "$PAIRS" --rate "$rate" \
                --seconds "$MEASURE" --warmup "$WARMUP"
        done
        stop_server
    fi
    if wanted connections; then
        start
        load register --users "${LEVELS##*,}"
        load connections --levels "$LEVELS"
        stop_server
    fi
    if wanted logins; then
        start
        load register --users "$WORKERS"
        load logins --workers "$WORKERS" --seconds "$LOGIN_SECONDS"
        stop_server
    fi
    if wanted archive; then
        start yes
        load register --users $((2 * PAIRS))
        load --record-as throughput-archive throughput --pairs "$PAIRS" --window "$WINDOW" \
            --seconds "$MEASURE" --warmup "$WARMUP" --no-latency
        stop_server
    fi
    if wanted federation; then
        start_pair
        load_on a.test "$PORT" register --users "$PAIRS"
        load_on b.test $((PORT + 10)) register --users "$PAIRS"
        load_on a.test "$PORT" federation --peer-addr "$ADDR:$((PORT + 10))" --peer-domain b.test \
            --pairs "$PAIRS" --window "$WINDOW" --seconds "$MEASURE" --warmup "$WARMUP"
        stop_server
    fi
    if wanted both-cores && [[ "$LABEL" == tern ]]; then
        pinned=("${ON_SERVER[@]}")
        ((${#ON_SERVER[@]})) && ON_SERVER=(taskset -c 0,1)
        start_tern
        ON_SERVER=("${pinned[@]}")
        load register --users $((2 * PAIRS))
        load --record-as throughput-both-cores throughput --pairs "$PAIRS" --window "$WINDOW" \
            --seconds "$MEASURE" --warmup "$WARMUP" --no-latency
        stop_server
    fi
done

echo
target/release/tern-load report "$JSON"
echo "(results: $JSON)"
