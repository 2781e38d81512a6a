#!/usr/bin/env bash
# The demo: a dev director on this machine, the web release deployed as two web
# servers behind a load balancer, all on the local CPI.
#   scripts/demo.sh up     (make demo)       — safe to run again
#   scripts/demo.sh down   (make demo-down)  — stops the director, removes every VM
set -euo pipefail
cd "$(dirname "$0")/.."

DATA=${COMPLEAT_DEMO_DATA:-.compleat}
LISTEN=${COMPLEAT_DEMO_LISTEN:-127.0.0.1:25555}
LB=${COMPLEAT_DEMO_LB:-127.77.1.10:8080}
DIRECTOR=bin/director
PIDFILE=$DATA/director.pid

say() { printf '\n==> %s\n' "$*"; }

director_running() {
  [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

start_director() {
  mkdir -p "$DATA"
  if director_running; then
    say "director already running (pid $(cat "$PIDFILE"))"
  else
    say "starting a dev director (data in $DATA, log in $DATA/director.log)"
    rm -f "$DATA/env"
    nohup "$DIRECTOR" serve --dev --data "$DATA" --listen "$LISTEN" >"$DATA/director.log" 2>&1 &
    echo $! >"$PIDFILE"
  fi
  for _ in $(seq 1 100); do
    if [ -s "$DATA/env" ]; then
      # shellcheck disable=SC1090,SC1091
      . "$DATA/env"
      if "$DIRECTOR" deployments >/dev/null 2>&1; then
        return 0
      fi
    fi
    if ! director_running; then
      echo "the director exited; its log:" >&2
      tail -n 30 "$DATA/director.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "the director did not answer within 20 s; see $DATA/director.log" >&2
  exit 1
}

up() {
  start_director
  export DIRECTOR_TARGET DIRECTOR_TOKEN DIRECTOR_CA_CERT
  say "uploading the web release and the local stemcell"
  "$DIRECTOR" upload-release releases/web
  "$DIRECTOR" upload-stemcell build/stemcells/local.tgz
  say "setting the cloud config"
  "$DIRECTOR" -n update-cloud-config manifests/local/cloud-config.yml
  say "deploying manifests/local/web.yml"
  "$DIRECTOR" -n -d web deploy manifests/local/web.yml
  say "instances"
  "$DIRECTOR" -d web instances --ps
  say "a request through the load balancer (http://$LB/)"
  for _ in 1 2 3 4; do
    curl -fsS "http://$LB/"
  done
  cat <<MSG

The director keeps running in the background. To use the CLI yourself:
  . $DATA/env && bin/director -d web instances --ps
To stop it and remove every VM it made:
  make demo-down
MSG
}

down() {
  if director_running; then
    if [ -s "$DATA/env" ]; then
      # shellcheck disable=SC1090,SC1091
      . "$DATA/env"
      export DIRECTOR_TARGET DIRECTOR_TOKEN DIRECTOR_CA_CERT
      say "deleting deployment web"
      "$DIRECTOR" -n -d web delete-deployment --force || true
    fi
    say "stopping the director"
    kill "$(cat "$PIDFILE")" 2>/dev/null || true
    for _ in $(seq 1 50); do director_running || break; sleep 0.2; done
    director_running && kill -9 "$(cat "$PIDFILE")" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
  # Whatever is left (a director that died mid-deploy): kill every VM's
  # process tree and remove its files.
  if [ -d "$DATA/vms" ]; then
    for vm in "$DATA"/vms/*/; do
      [ -d "$vm" ] || continue
      if [ -f "$vm/agent.pid" ]; then
        pid=$(cat "$vm/agent.pid")
        pkill -KILL -s "$pid" 2>/dev/null || true
        kill -KILL "$pid" 2>/dev/null || true
      fi
    done
    rm -rf "$DATA/vms"
  fi
  say "demo stopped; state kept in $DATA (remove it for a fresh start)"
}

case "${1:-}" in
up) up ;;
down) down ;;
*) echo "usage: $0 up|down" >&2; exit 2 ;;
esac
