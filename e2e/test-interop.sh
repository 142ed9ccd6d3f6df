#!/usr/bin/env bash
# The interop matrix: what the operator writes, read by consumers nobody here wrote, for every key
# algorithm it offers. For each algorithm, three identities (server-, client-, revoked-<alg>) are
# issued by the operator; the revoked one's certificate is revoked after its files are taken.
# Each consumer gets the files exactly as a workload does: the identity Secret's keys, and the
# directory `nhi-operator agent` keeps (tls.crt, tls.key, ca.crt, identity.pem, crl.pem from the
# namespace's nhi-trust ConfigMap).
#
# Cells (consumer x algorithm), each `ok - CONSUMER ALG` or `not ok - ...`:
#   openssl-pkey   OpenSSL 3.0 `pkey` reads every key (Secret tls.key and identity.pem, the
#                  agent's files) and finds the certificate's public key; `openssl verify` accepts
#                  the client certificate against ca.crt and crl.pem and refuses the revoked one
#   openssl-tls    `openssl s_server` (client certificates required, CRL checked) and
#                  `openssl s_client`: the client is served, the revoked client refused
#   nginx          nginx (Debian's package) with ssl_verify_client on, ssl_client_certificate and
#                  ssl_crl from the trust bundle, answering curl with the client certificate; the
#                  revoked client refused; after a rotation of the server identity, the agent's
#                  --exec runs `nginx -s reload` and nginx serves the new certificate
#   python-ssl     Python's ssl module as server and client (tls.key and identity.pem)
#   pyca           pyca/cryptography loads keys, certificates and CRLs; the chain verifies
#   go-tls         Go's crypto/tls as server and client (e2e/interop/gotls)
#   node-tls       Node's tls module as server and client, crl option
#   java-jsse      JSSE as server and client, PKIX revocation with the CRLs of crl.pem
#   mtls-echo      the project's own mTLS echo example (rustls, with the reload library) as
#                  server and client
#   postgresql     PostgreSQL (Debian's package) with `hostssl ... cert map=nhi`: pg_ident.conf
#                  maps the certificate's SPIFFE ID (its CN) to a database user; psql logs in as
#                  that user, the revoked client and an identity with no mapping are refused
#
# The last lines are the matrix, then `N passed, M failed`. With --write-table FILE, the README's
# "Works with" table (between its interop-matrix markers) is rewritten from this run; without it,
# the run fails when the README's table is not the one this run produced.
#
#   e2e/test-interop.sh [--write-table README.md]
#   NHI_INTEROP_ONLY="nginx postgresql" e2e/test-interop.sh    only these consumers' cells
#
# Needs: the CRDs and the tenant policy installed, kubectl, openssl, curl, python3 with
# cryptography, go, node, java, PostgreSQL's server binaries and nginx (e2e/interop/nginx.sh
# takes it from Debian's package when it is not installed); root, to run PostgreSQL as its
# `postgres` user. KUBECONFIG (default $NHI_CLUSTER_DIR/kubeconfig). Creates namespace $NS
# (default nhi-interop-test) and deletes it at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=e2e/env.sh
. e2e/env.sh
export KUBECONFIG=${KUBECONFIG:-$NHI_CLUSTER_DIR/kubeconfig}
NS=${NHI_INTEROP_TEST_NS:-nhi-interop-test}
write_table=
[ "${1:-}" = "--write-table" ] && write_table=${2:?--write-table FILE}

ALGS=(ECDSA-P256 ECDSA-P384 Ed25519 RSA-2048 RSA-3072)
CONSUMERS=(openssl-pkey openssl-tls nginx python-ssl pyca go-tls node-tls java-jsse postgresql mtls-echo)

work=$(mktemp -d)
chmod 755 "$work" # PostgreSQL runs as its own user and reads its files under here
passed=0
failed=0
pids=()
declare -A result

# shellcheck source=e2e/tap.sh
. e2e/tap.sh

cleanup() {
  local p
  # Checks run in subshells: a background process one leaves running has its pid in $work/pids.
  if [ -f "$work/pids" ]; then while read -r p; do pids+=("$p"); done <"$work/pids"; fi
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -f "$work/nginx/nginx.pid" ]; then kill "$(cat "$work/nginx/nginx.pid")" 2>/dev/null || true; fi
  if [ -d "$work/pg/data" ]; then pg stop -m immediate >/dev/null 2>&1 || true; fi
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  local mi
  for mi in $(k get machineidentities -n "$NS" -o name 2>/dev/null); do
    k patch -n "$NS" "$mi" --type=merge -p '{"metadata":{"finalizers":null}}' >/dev/null 2>&1 || true
  done
  k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

slug() { tr '[:upper:]' '[:lower:]' <<<"$1"; }

# cell CONSUMER ALG COMMAND...: a check that is also a cell of the matrix.
cell() {
  local consumer=$1 alg=$2
  shift 2
  if [ -n "${NHI_INTEROP_ONLY:-}" ] && [[ " $NHI_INTEROP_ONLY " != *" $consumer "* ]]; then
    result[$consumer/$alg]=skip
    return 0
  fi
  local before=$failed
  check "$consumer $alg" "$@"
  result[$consumer/$alg]=$([ "$failed" -eq "$before" ] && echo pass || echo FAIL)
}

fresh_namespace() {
  local deadline=$((SECONDS + 120))
  while k get namespace "$NS" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "namespace $NS still exists"; return 1; }
    sleep 1
  done
  k create namespace "$NS"
}
check "namespace $NS created" fresh_namespace

identities() {
  local alg s
  for alg in "${ALGS[@]}"; do
    s=$(slug "$alg")
    cat <<EOF
---
apiVersion: nhi.dev/v1alpha1
kind: MachineIdentity
metadata: {name: server-$s}
spec:
  owner: {team: interop}
  secretName: server-$s-identity
  certificate: {keyAlgorithm: $alg, usages: [server, client], dnsNames: [server-$s.$NS.svc]}
EOF
    for role in client revoked; do
      cat <<EOF
---
apiVersion: nhi.dev/v1alpha1
kind: MachineIdentity
metadata: {name: $role-$s}
spec:
  owner: {team: interop}
  secretName: $role-$s-identity
  certificate: {keyAlgorithm: $alg, usages: [client]}
EOF
    done
  done
}
identities >"$work/identities.yaml"
check "15 identities applied (server, client, revoked x ${#ALGS[@]} algorithms)" \
  k apply -n "$NS" -f "$work/identities.yaml"

check "cargo build --bin nhi-operator, the mtls_echo example" \
  cargo build --quiet --bin nhi-operator -p nhi-operator -p nhi-identity --example mtls_echo
check "go build e2e/interop/gotls" bash -c "cd e2e/interop/gotls && go build -o '$work/gotls' ."
check "nginx (e2e/interop/nginx.sh)" bash -c "e2e/interop/nginx.sh >'$work/nginx-path'"
[ "$failed" -eq 0 ] || { echo "$passed passed, $failed failed"; exit 1; }
nginx_bin=$(cat "$work/nginx-path")

target/debug/nhi-operator run --watch-namespace "$NS" --operator-namespace "$NS" \
  --http-addr 127.0.0.1:0 >"$work/operator.log" 2>&1 &
pids+=($!)

with_log() {
  "$@" && return 0
  echo "--- operator log (tail)"
  tail -n 30 "$work/operator.log"
  return 1
}
check "every identity Ready" \
  with_log k wait -n "$NS" --for=condition=Ready --timeout=120s machineidentities --all

# project NAME: the agent's directory of NAME's identity, written once; and its Secret's keys.
project() {
  local name=$1
  target/debug/nhi-operator agent --namespace "$NS" --secret "$name-identity" \
    --dir "$work/agent/$name" --once
  mkdir -p "$work/secret/$name"
  local key
  for key in tls.crt tls.key ca.crt identity.pem; do
    k get secret -n "$NS" "$name-identity" -o "jsonpath={.data.${key//./\\.}}" | base64 -d \
      >"$work/secret/$name/$key"
  done
}
serial_of() { openssl x509 -noout -serial -in "$1" | cut -d= -f2; }
for alg in "${ALGS[@]}"; do
  s=$(slug "$alg")
  for role in server client revoked; do
    check "files of $role-$s (Secret and agent --once)" project "$role-$s"
  done
done

# Revoke the revoked-* identities' certificates (the files taken above), then wait for the CRL.
revoke_all() {
  local alg s
  for alg in "${ALGS[@]}"; do
    s=$(slug "$alg")
    k annotate -n "$NS" "machineidentity/revoked-$s" --overwrite "nhi.dev/revoke-requested=interop-$$"
  done
}
crl_lists_all() {
  local deadline=$((SECONDS + 30)) alg revoked=()
  for alg in "${ALGS[@]}"; do revoked+=("$work/agent/revoked-$(slug "$alg")/tls.crt"); done
  while :; do
    k get configmap -n "$NS" nhi-trust -o 'jsonpath={.data.crl\.pem}' >"$work/crl.pem"
    python3 e2e/interop/tls_python.py listed "$work/crl.pem" "${revoked[@]}" && return 0
    [ $SECONDS -lt $deadline ] || { echo "not all on the CRL after 30 s"; return 1; }
    sleep 0.5
  done
}
check "revoked-* certificates revoked" revoke_all
check "the CRL in nhi-trust lists every revoked serial" with_log crl_lists_all
# The CRL as each workload gets it: the agent writes it beside the identity.
for alg in "${ALGS[@]}"; do
  s=$(slug "$alg")
  for role in server client; do
    check "crl.pem of $role-$s refreshed (agent --once)" project "$role-$s"
  done
done
[ "$failed" -eq 0 ] || { echo "$passed passed, $failed failed"; exit 1; }

hostname_of() { echo "server-$1.$NS.svc"; }

# --- openssl pkey / verify ---------------------------------------------------------------------
openssl_pkey() {
  local s=$1 role f pub want
  for role in server client revoked; do
    want=$(openssl x509 -in "$work/secret/$role-$s/tls.crt" -noout -pubkey)
    for f in "$work/secret/$role-$s/tls.key" "$work/secret/$role-$s/identity.pem" \
      "$work/agent/$role-$s/tls.key" "$work/agent/$role-$s/identity.pem"; do
      pub=$(openssl pkey -in "$f" -pubout) || { echo "openssl pkey cannot read $f"; return 1; }
      [ "$pub" = "$want" ] || { echo "$f: not the certificate's key"; return 1; }
    done
  done
  echo "12 key files read, each the certificate's key"
  local d=$work/agent/client-$s r=$work/agent/revoked-$s
  openssl verify -CAfile "$d/ca.crt" -crl_check -CRLfile "$work/agent/server-$s/crl.pem" \
    -purpose sslclient "$d/tls.crt" || return 1
  if openssl verify -CAfile "$d/ca.crt" -crl_check -CRLfile "$work/agent/server-$s/crl.pem" \
    -purpose sslclient "$r/tls.crt" >"$work/verify-revoked" 2>&1; then
    echo "openssl verify accepted the revoked certificate"
    return 1
  fi
  grep -q "certificate revoked" "$work/verify-revoked" || { cat "$work/verify-revoked"; return 1; }
  echo "revoked: $(grep -m1 'error' "$work/verify-revoked")"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
  local deadline=$((SECONDS + 10))
  until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "nothing listens on $1"; return 1; }
    sleep 0.1
  done
}

# --- openssl s_server / s_client ---------------------------------------------------------------
openssl_tls() {
  local s=$1 port
  local srv=$work/agent/server-$s
  port=$(free_port)
  # s_server's -CRL reads one CRL, and crl.pem holds one per CA during a rotation: OpenSSL reads
  # every CRL of a CAfile, so the bundle and the CRLs go in one.
  cat "$srv/ca.crt" "$srv/crl.pem" >"$work/ca-and-crls.pem"
  openssl s_server -accept "127.0.0.1:$port" -cert "$srv/tls.crt" -key "$srv/tls.key" \
    -CAfile "$work/ca-and-crls.pem" -Verify 1 -verify_return_error -crl_check \
    -www -naccept 3 >"$work/s_server.log" 2>&1 &
  local server=$!
  # The probe is the first of the three connections it accepts.
  # (s_server may have exited already: its log is what tells why.)
  wait_port "$port" || { kill "$server" 2>/dev/null || true; cat "$work/s_server.log"; return 1; }
  s_client() {
    local d=$1
    printf 'GET / HTTP/1.0\r\n\r\n' | timeout 10 openssl s_client -connect "127.0.0.1:$port" \
      -servername "$(hostname_of "$s")" -verify_hostname "$(hostname_of "$s")" -verify_return_error \
      -CAfile "$d/ca.crt" -cert "$d/tls.crt" -key "$d/tls.key" -ign_eof 2>&1
  }
  local ok=0
  s_client "$work/agent/client-$s" >"$work/s_client.log" || true
  if grep -q "HTTP/1.0 200 ok" "$work/s_client.log"; then
    echo "client served ($(grep -m1 'Verify return code' "$work/s_client.log" | sed 's/^ *//'))"
  else
    echo "client not served:"; tail -5 "$work/s_client.log"; ok=1
  fi
  s_client "$work/agent/revoked-$s" >"$work/s_client.log" || true
  if grep -q "HTTP/1.0 200 ok" "$work/s_client.log"; then
    echo "revoked client served"; ok=1
  else
    echo "revoked client refused: $(grep -m1 -i 'alert\|error' "$work/s_client.log")"
  fi
  # s_server ends after its third connection; a client that never connected (one that cannot
  # read its key) would leave it waiting.
  for _ in $(seq 1 50); do kill -0 "$server" 2>/dev/null || break; sleep 0.1; done
  kill "$server" 2>/dev/null || true
  wait $server || true
  grep -qi "certificate revoked" "$work/s_server.log" || { echo "s_server:"; cat "$work/s_server.log"; ok=1; }
  return $ok
}

# --- nginx -------------------------------------------------------------------------------------
nginx_ctl() { "$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" -e "$work/nginx/error.log" "$@"; }
nginx_start() {
  mkdir -p "$work/nginx"
  local alg s port
  {
    echo "pid $work/nginx/nginx.pid; worker_processes 1; error_log $work/nginx/error.log;"
    echo "events {}"
    echo "http {"
    echo "  access_log off;"
    for t in client_body proxy fastcgi uwsgi scgi; do echo "  ${t}_temp_path $work/nginx/$t;"; done
    for alg in "${ALGS[@]}"; do
      s=$(slug "$alg")
      port=$(free_port)
      echo "$port" >"$work/nginx/port-$s"
      cat <<EOF
  server {
    listen 127.0.0.1:$port ssl;
    server_name $(hostname_of "$s");
    ssl_certificate $work/agent/server-$s/tls.crt;
    ssl_certificate_key $work/agent/server-$s/tls.key;
    ssl_client_certificate $work/agent/server-$s/ca.crt;
    ssl_crl $work/agent/server-$s/crl.pem;
    ssl_verify_client on;
    location / { default_type text/plain; return 200 "\$ssl_client_verify \$ssl_client_serial\n"; }
  }
EOF
    done
    echo "}"
  } >"$work/nginx/nginx.conf"
  nginx_ctl -t && nginx_ctl
}
curl_nginx() {
  local s=$1 d=$2 port
  port=$(cat "$work/nginx/port-$s")
  curl -sS --max-time 10 --resolve "$(hostname_of "$s"):$port:127.0.0.1" --cacert "$d/ca.crt" \
    --cert "$d/tls.crt" --key "$d/tls.key" -w ' HTTP %{http_code}' "https://$(hostname_of "$s"):$port/"
}
served_serial() {
  local s=$1 port
  port=$(cat "$work/nginx/port-$s")
  openssl s_client -connect "127.0.0.1:$port" -servername "$(hostname_of "$s")" \
    -cert "$work/agent/client-$s/tls.crt" -key "$work/agent/client-$s/tls.key" </dev/null 2>/dev/null |
    openssl x509 -noout -serial | cut -d= -f2
}
nginx_cell() {
  local s=$1 out
  out=$(curl_nginx "$s" "$work/agent/client-$s") || { echo "curl: $out"; return 1; }
  echo "client: $out"
  [[ $out == "SUCCESS "*" HTTP 200" ]] || return 1
  out=$(curl_nginx "$s" "$work/agent/revoked-$s" 2>&1 || true)
  echo "revoked client: ${out//$'\n'/ }"
  [[ $out == *"HTTP 400"* ]] || return 1
  # A rotation of the server identity: the agent (as a workload runs it) writes the new files and
  # reloads nginx, which then serves the new certificate.
  local before after deadline
  before=$(served_serial "$s")
  target/debug/nhi-operator agent --namespace "$NS" --secret "server-$s-identity" \
    --dir "$work/agent/server-$s" --exec "'$nginx_bin' -p '$work/nginx' -c '$work/nginx/nginx.conf' -e '$work/nginx/error.log' -s reload" \
    >"$work/agent-$s.log" 2>&1 &
  local agent=$!
  echo "$agent" >>"$work/pids"
  k patch -n "$NS" "machineidentity/server-$s" --type=merge \
    -p "{\"spec\":{\"certificate\":{\"dnsNames\":[\"$(hostname_of "$s")\",\"rotated-$s.$NS.svc\"]}}}" >/dev/null
  deadline=$((SECONDS + 30))
  while :; do
    # Empty while nginx cannot answer (reloading): tried again.
    after=$(served_serial "$s" || true)
    [ -n "$after" ] && [ "$after" != "$before" ] && break
    [ $SECONDS -lt $deadline ] || { echo "nginx still serves $before 30 s after the rotation"; tail "$work/agent-$s.log"; return 1; }
    sleep 0.5
  done
  echo "rotated: nginx served $before, serves $after after the agent's reload"
  out=$(curl_nginx "$s" "$work/agent/client-$s") || return 1
  echo "client after the rotation: $out"
  [[ $out == "SUCCESS "*" HTTP 200" ]]
}

# --- PostgreSQL --------------------------------------------------------------------------------
pg_bin=$(printf '%s\n' /usr/lib/postgresql/*/bin | grep -v '\*' | sort -V | tail -1)
pg_as() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
pg() { pg_as "$pg_bin/pg_ctl" -D "$work/pg/data" -l "$work/pg/log" -w "$@"; }
pg_start() {
  [ -n "$pg_bin" ] || { echo "no PostgreSQL server binaries under /usr/lib/postgresql"; return 1; }
  mkdir -p "$work/pg/sock" "$work/pg/ssl"
  [ "$(id -u)" -ne 0 ] || chown -R postgres "$work/pg"
  pg_as "$pg_bin/initdb" -D "$work/pg/data" -A trust -U postgres >/dev/null
  local pg_port trust_domain_path
  pg_port=$(free_port)
  # The cells run in other checks' subshells: they read the port from this file.
  echo "$pg_port" >"$work/pg-port"
  trust_domain_path=$(openssl x509 -in "$work/agent/client-ed25519/tls.crt" -noout -ext subjectAltName |
    grep -o 'URI:spiffe://[^,]*' | sed 's/^URI://; s#/mi/.*##')
  cat >>"$work/pg/data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $pg_port
unix_socket_directories = '$work/pg/sock'
ssl = on
ssl_cert_file = '$work/pg/ssl/server.crt'
ssl_key_file = '$work/pg/ssl/server.key'
ssl_ca_file = '$work/pg/ssl/ca.crt'
ssl_crl_file = '$work/pg/ssl/crl.pem'
EOF
  # The certificate's identity: its SPIFFE ID, which is its CN. Clients of this namespace named
  # client-* or revoked-* log in as the database user of their identity's name; nothing else maps.
  cat >"$work/pg/data/pg_hba.conf" <<EOF
local all postgres trust
hostssl all all 127.0.0.1/32 cert map=nhi
EOF
  local escaped=${trust_domain_path//./\\.}
  cat >"$work/pg/data/pg_ident.conf" <<EOF
nhi /^${escaped}/mi/((client|revoked)-[a-z0-9-]+)\$ \\1
EOF
  pg_server_files ed25519
  pg start >/dev/null
  local alg
  for alg in "${ALGS[@]}"; do
    for role in client revoked server; do
      pg_as "$pg_bin/psql" -h "$work/pg/sock" -p "$pg_port" -U postgres -qc "CREATE ROLE \"$role-$(slug "$alg")\" LOGIN" postgres
    done
  done
}
pg_server_files() {
  local d=$work/agent/server-$1
  cp "$d/tls.crt" "$work/pg/ssl/server.crt"
  cp "$d/tls.key" "$work/pg/ssl/server.key"
  cp "$d/ca.crt" "$work/pg/ssl/ca.crt"
  cp "$d/crl.pem" "$work/pg/ssl/crl.pem"
  chmod 600 "$work/pg/ssl/"*
  [ "$(id -u)" -ne 0 ] || chown postgres "$work/pg/ssl/"*
}
# psql_as ALG DIR USER: psql with DIR's certificate as USER, on the caller's pg_port.
psql_as() {
  local s=$1 d=$2 user=$3
  timeout 10 psql "host=$(hostname_of "$s") hostaddr=127.0.0.1 port=$pg_port dbname=postgres user=$user sslmode=verify-full sslrootcert=$d/ca.crt sslcert=$d/tls.crt sslkey=$d/tls.key" \
    -tAc 'SELECT current_user' 2>&1
}
postgresql_cell() {
  local s=$1 out pg_port
  pg_port=$(cat "$work/pg-port")
  pg_server_files "$s"
  pg reload >/dev/null
  # SIGHUP is asynchronous: the server presents the new certificate once it has re-read it.
  local deadline=$((SECONDS + 10)) want
  want=$(serial_of "$work/agent/server-$s/tls.crt")
  until [ "$(openssl s_client -connect "127.0.0.1:$pg_port" -starttls postgres </dev/null 2>/dev/null |
    openssl x509 -noout -serial 2>/dev/null | cut -d= -f2)" = "$want" ]; do
    [ $SECONDS -lt $deadline ] || { echo "PostgreSQL does not serve server-$s's certificate"; tail "$work/pg/log"; return 1; }
    sleep 0.2
  done
  out=$(psql_as "$s" "$work/agent/client-$s" "client-$s") || { echo "client-$s cannot log in: $out"; return 1; }
  echo "client-$s logs in as: $out"
  [ "$out" = "client-$s" ] || return 1
  out=$(psql_as "$s" "$work/agent/revoked-$s" "revoked-$s" || true)
  echo "revoked-$s: ${out//$'\n'/ }"
  [ "$out" != "revoked-$s" ] && [[ $out == *"certificate revoked"* ]] || return 1
  # An identity the map does not name cannot log in, even as a user that exists.
  out=$(psql_as "$s" "$work/agent/server-$s" "client-$s" || true)
  echo "server-$s as client-$s: ${out//$'\n'/ }"
  [[ $out == *"authentication failed"* ]]
}

# --- the mTLS echo example --------------------------------------------------------------------
mtls_echo_cell() {
  local s=$1 port out
  port=$(free_port)
  target/debug/examples/mtls_echo serve --identity-dir "$work/agent/server-$s" \
    --addr "127.0.0.1:$port" >"$work/echo-$s.log" 2>&1 &
  local server=$!
  # (The server may have exited already: its log is what tells why.)
  wait_port "$port" || { kill $server || true; cat "$work/echo-$s.log"; return 1; }
  echo_call() {
    target/debug/examples/mtls_echo call --identity-dir "$1" --addr "127.0.0.1:$port" \
      --server-name "$(hostname_of "$s")" --duration 300ms --interval 100ms 2>&1
  }
  local ok=0
  out=$(echo_call "$work/agent/client-$s") || ok=1
  echo "client: $(tail -1 <<<"$out")"
  if out=$(echo_call "$work/agent/revoked-$s"); then
    echo "revoked client served: $(tail -1 <<<"$out")"
    ok=1
  else
    echo "revoked client refused: $(tail -1 <<<"$out")"
  fi
  kill $server
  wait $server 2>/dev/null || true
  return $ok
}

check "nginx started ($("$nginx_bin" -v 2>&1))" nginx_start
check "PostgreSQL started ($("$pg_bin/postgres" --version 2>/dev/null))" pg_start

for alg in "${ALGS[@]}"; do
  s=$(slug "$alg")
  srv=$work/agent/server-$s cli=$work/agent/client-$s rev=$work/agent/revoked-$s
  cell openssl-pkey "$alg" openssl_pkey "$s"
  cell openssl-tls "$alg" openssl_tls "$s"
  cell nginx "$alg" nginx_cell "$s"
  cell python-ssl "$alg" python3 e2e/interop/tls_python.py ssl "$srv" "$cli" "$rev" "$(hostname_of "$s")"
  cell pyca "$alg" python3 e2e/interop/tls_python.py pyca "$cli" "$rev"
  cell go-tls "$alg" "$work/gotls" "$srv" "$cli" "$rev" "$(hostname_of "$s")"
  cell node-tls "$alg" node e2e/interop/tls_node.js "$srv" "$cli" "$rev" "$(hostname_of "$s")"
  cell java-jsse "$alg" java e2e/interop/TlsJava.java "$srv" "$cli" "$rev" "$(hostname_of "$s")"
  cell postgresql "$alg" postgresql_cell "$s"
  cell mtls-echo "$alg" mtls_echo_cell "$s"
done

# The matrix, and the README's table from it (not for a partial run).
{
  printf '%-14s' consumer
  printf ' %-10s' "${ALGS[@]}"
  echo
  for c in "${CONSUMERS[@]}"; do
    printf '%-14s' "$c"
    for alg in "${ALGS[@]}"; do printf ' %-10s' "${result[$c/$alg]:-FAIL}"; done
    echo
  done
} | tee "$work/matrix"
table_current() {
  python3 e2e/interop/works_with.py "$work/matrix" "${write_table:-README.md}" ${write_table:+--write}
}
[ -n "${NHI_INTEROP_ONLY:-}" ] || check "README's 'Works with' table is this run's" table_current

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
