#!/usr/bin/env bash
# The demo: a dev director on this machine, the web release deployed as two web
# servers behind a load balancer, all on the local CPI.
#   scripts/demo.sh up     (make demo)       — safe to run again
#   scripts/demo.sh down   (make demo-down)  — stops the director, removes every VM
# With CLOUD=aws (make demo CLOUD=aws): the same deployment through cpi-aws on
# a simulated AWS (cloudsim aws: moto's EC2 server, a VM booted here for every
# instance) and a production-mode director (serve --config); .compleat/cloud.env
# then holds the AWS client variables. See docs/clouds.md.
# With CLOUD=openstack: the same through cpi-openstack on a simulated OpenStack
# (cloudsim openstack: Keystone, Nova, Neutron, Cinder, Glance, a VM booted
# here for every server); .compleat/cloud.env then holds the OS_* variables.
# With CLOUD=azure: the same through cpi-azure on a simulated Azure (cloudsim
# azure: Resource Manager and Entra ID over HTTPS, a VM booted here for every
# VM); .compleat/cloud.env then holds the AZURE_* variables.
set -euo pipefail
cd "$(dirname "$0")/.."
CLOUD=${CLOUD:-}

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

# ---- CLOUD=aws: cpi-aws on the simulated AWS -------------------------------

AWSDIR=$DATA/aws
CLOUDSIM=bin/cloudsim
SIM_PIDFILE=$AWSDIR/cloudsim.pid
AWS_DIRECTOR_PIDFILE=$AWSDIR/director.pid
AWS_NATS=${COMPLEAT_DEMO_NATS:-127.0.0.1:25556}
AWS_LB=${COMPLEAT_DEMO_AWS_LB:-127.80.1.10:8080}

pid_running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid PIDFILE: SIGTERM, up to 30 s, then SIGKILL.
stop_pid() {
  if pid_running "$1"; then
    kill "$(cat "$1")" 2>/dev/null || true
    for _ in $(seq 1 150); do pid_running "$1" || break; sleep 0.2; done
    pid_running "$1" && kill -9 "$(cat "$1")" 2>/dev/null || true
  fi
  rm -f "$1"
}

start_cloudsim() {
  mkdir -p "$AWSDIR"
  if pid_running "$SIM_PIDFILE"; then
    say "simulated AWS already running (cloudsim pid $(cat "$SIM_PIDFILE"))"
    return 0
  fi
  command -v moto_server >/dev/null || { echo "moto_server is not on PATH: the simulated AWS runs moto's EC2 server (pip install 'moto[server]')" >&2; exit 1; }
  # moto keeps its state in memory: a new simulator is a new, empty cloud,
  # and a director that remembers the old one has nothing to manage.
  stop_pid "$AWS_DIRECTOR_PIDFILE"
  rm -rf "$AWSDIR/director"
  say "starting the simulated AWS (moto's EC2 server + cloudsim; log in $AWSDIR/cloudsim.log)"
  rm -f "$DATA/cloud.env"
  # The AMI the light stemcell names is made from the local stemcell: its
  # instances boot the agent that stemcell carries.
  nohup "$CLOUDSIM" aws --data "$AWSDIR" --env-file "$DATA/cloud.env" \
    --stemcell build/stemcells/local.tgz >"$AWSDIR/cloudsim.log" 2>&1 &
  echo $! >"$SIM_PIDFILE"
  for _ in $(seq 1 300); do
    [ -s "$DATA/cloud.env" ] && return 0
    if ! pid_running "$SIM_PIDFILE"; then
      echo "cloudsim exited; its log:" >&2
      tail -n 30 "$AWSDIR/cloudsim.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "the simulated AWS did not start within 60 s; see $AWSDIR/cloudsim.log" >&2
  exit 1
}

# await_prod_director TITLE DIR PIDFILE writes DATA/env for the
# production-mode director of a simulated cloud's demo (its config, token and
# data under DIR) and waits until it answers.
await_prod_director() {
  local title=$1 dir=$2 pidfile=$3
  (umask 077; printf '# Source this file to use the director of the simulated %s demo.\nexport DIRECTOR_TARGET=https://%s\nexport DIRECTOR_TOKEN=%s\nexport DIRECTOR_CA_CERT=%s\n' \
    "$title" "$LISTEN" "$(cat "$dir/admin.token")" "$(cd "$dir/director" && pwd)/ca.pem" >"$DATA/env")
  for _ in $(seq 1 100); do
    if [ -s "$dir/director/ca.pem" ]; then
      # shellcheck disable=SC1090,SC1091
      . "$DATA/env"
      export DIRECTOR_TARGET DIRECTOR_TOKEN DIRECTOR_CA_CERT
      if "$DIRECTOR" deployments >/dev/null 2>&1; then
        return 0
      fi
    fi
    if ! pid_running "$pidfile"; then
      echo "the director exited; its log:" >&2
      tail -n 30 "$dir/director.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "the director did not answer within 20 s; see $dir/director.log" >&2
  exit 1
}

start_aws_director() {
  # shellcheck disable=SC1090,SC1091
  . "$DATA/cloud.env"
  if pid_running "$AWS_DIRECTOR_PIDFILE"; then
    say "director already running (pid $(cat "$AWS_DIRECTOR_PIDFILE"))"
  else
    mkdir -p "$AWSDIR/director"
    if [ ! -s "$AWSDIR/admin.token" ]; then
      (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$AWSDIR/admin.token")
    fi
    # A production-mode director with cpi-aws pointed at the simulator.
    (umask 077; cat >"$AWSDIR/director.yml" <<YML
listen: $LISTEN
data_dir: director
tokens:
- name: admin
  token_file: admin.token
  scopes: [admin]
blobstore:
  type: fs
  public_url: https://$LISTEN
nats:
  listen: $AWS_NATS
  url: nats://$AWS_NATS
cpis:
- name: aws
  type: aws
  properties:
    region: $AWS_DEFAULT_REGION
    endpoint: $AWS_ENDPOINT_URL
    access_key_id: $AWS_ACCESS_KEY_ID
    secret_access_key: $AWS_SECRET_ACCESS_KEY
    poll_interval: 200ms
YML
)
    say "starting a production-mode director with cpi-aws (serve --config $AWSDIR/director.yml)"
    nohup "$DIRECTOR" serve --config "$AWSDIR/director.yml" >"$AWSDIR/director.log" 2>&1 &
    echo $! >"$AWS_DIRECTOR_PIDFILE"
  fi
  await_prod_director "AWS" "$AWSDIR" "$AWS_DIRECTOR_PIDFILE"
}

up_aws() {
  start_cloudsim
  start_aws_director
  export DIRECTOR_TARGET DIRECTOR_TOKEN DIRECTOR_CA_CERT
  say "uploading the web release and a light stemcell naming the AMI made from the local stemcell ($COMPLEAT_AWS_AMI)"
  "$DIRECTOR" upload-release releases/web
  mkdir -p build/stemcells
  "$DIRECTOR" create-stemcell --light --name compleat-aws --format aws-light \
    --cloud-property "ami_id=$COMPLEAT_AWS_AMI" --tarball build/stemcells/aws-light.tgz
  "$DIRECTOR" upload-stemcell build/stemcells/aws-light.tgz
  say "setting the cloud config (subnets $COMPLEAT_AWS_SUBNET_1, $COMPLEAT_AWS_SUBNET_2)"
  "$DIRECTOR" interpolate manifests/aws/cloudsim/cloud-config.yml \
    -v "subnet_z1=$COMPLEAT_AWS_SUBNET_1" -v "subnet_z2=$COMPLEAT_AWS_SUBNET_2" >"$AWSDIR/cloud-config.yml"
  "$DIRECTOR" -n update-cloud-config "$AWSDIR/cloud-config.yml"
  say "deploying manifests/aws/cloudsim/web.yml"
  "$DIRECTOR" -n -d web deploy manifests/aws/cloudsim/web.yml
  say "instances (VM cids are EC2 instance ids)"
  "$DIRECTOR" -d web instances --ps
  say "a request through the load balancer (http://$AWS_LB/)"
  for _ in 1 2 3 4; do
    curl -fsS "http://$AWS_LB/"
  done
  cat <<MSG

The director and the simulated AWS keep running in the background.
  . $DATA/env && bin/director -d web instances --ps
  . $DATA/cloud.env && aws ec2 describe-instances      (the cloud's own view)
To stop both and remove every VM:
  make demo-down CLOUD=aws
MSG
}

down_aws() {
  if pid_running "$AWS_DIRECTOR_PIDFILE" && [ -s "$DATA/env" ]; then
    # shellcheck disable=SC1090,SC1091
    . "$DATA/env"
    export DIRECTOR_TARGET DIRECTOR_TOKEN DIRECTOR_CA_CERT
    say "deleting deployment web"
    "$DIRECTOR" -n -d web delete-deployment --force || true
  fi
  say "stopping the director"
  stop_pid "$AWS_DIRECTOR_PIDFILE"
  # cloudsim deletes every VM it booted, then stops moto.
  say "stopping the simulated AWS"
  stop_pid "$SIM_PIDFILE"
  rm -f "$DATA/cloud.env"
  say "demo stopped; state kept in $DATA (remove it for a fresh start)"
}

# ---- CLOUD=openstack: cpi-openstack on the simulated OpenStack -------------

OSDIR=$DATA/openstack
OS_SIM_PIDFILE=$OSDIR/cloudsim.pid
OS_DIRECTOR_PIDFILE=$OSDIR/director.pid
OS_NATS=${COMPLEAT_DEMO_NATS:-127.0.0.1:25556}
OS_LB=${COMPLEAT_DEMO_OPENSTACK_LB:-127.82.1.10:8080}

start_openstack_sim() {
  mkdir -p "$OSDIR"
  if pid_running "$OS_SIM_PIDFILE"; then
    say "simulated OpenStack already running (cloudsim pid $(cat "$OS_SIM_PIDFILE"))"
    return 0
  fi
  # The cloud's state lives in cloudsim: a new one is a new, empty cloud.
  stop_pid "$OS_DIRECTOR_PIDFILE"
  rm -rf "$OSDIR/director"
  say "starting the simulated OpenStack (cloudsim; log in $OSDIR/cloudsim.log)"
  rm -f "$DATA/cloud.env" "$OSDIR/cpi-config.yml"
  nohup "$CLOUDSIM" openstack --data "$OSDIR" --env-file "$DATA/cloud.env" >"$OSDIR/cloudsim.log" 2>&1 &
  echo $! >"$OS_SIM_PIDFILE"
  for _ in $(seq 1 150); do
    [ -s "$DATA/cloud.env" ] && [ -s "$OSDIR/cpi-config.yml" ] && return 0
    if ! pid_running "$OS_SIM_PIDFILE"; then
      echo "cloudsim exited; its log:" >&2
      tail -n 30 "$OSDIR/cloudsim.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "the simulated OpenStack did not start within 30 s; see $OSDIR/cloudsim.log" >&2
  exit 1
}

start_openstack_director() {
  if pid_running "$OS_DIRECTOR_PIDFILE"; then
    say "director already running (pid $(cat "$OS_DIRECTOR_PIDFILE"))"
  else
    mkdir -p "$OSDIR/director"
    if [ ! -s "$OSDIR/admin.token" ]; then
      (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$OSDIR/admin.token")
    fi
    # A production-mode director whose cpi is the one cloudsim wrote.
    (umask 077; cat >"$OSDIR/director.yml" <<YML
listen: $LISTEN
data_dir: director
tokens:
- name: admin
  token_file: admin.token
  scopes: [admin]
blobstore:
  type: fs
  public_url: https://$LISTEN
nats:
  listen: $OS_NATS
  url: nats://$OS_NATS
YML
    grep -v '^#' "$OSDIR/cpi-config.yml" >>"$OSDIR/director.yml")
    say "starting a production-mode director with cpi-openstack (serve --config $OSDIR/director.yml)"
    nohup "$DIRECTOR" serve --config "$OSDIR/director.yml" >"$OSDIR/director.log" 2>&1 &
    echo $! >"$OS_DIRECTOR_PIDFILE"
  fi
  await_prod_director "OpenStack" "$OSDIR" "$OS_DIRECTOR_PIDFILE"
}

up_openstack() {
  start_openstack_sim
  start_openstack_director
  export DIRECTOR_TARGET DIRECTOR_TOKEN DIRECTOR_CA_CERT
  say "uploading the web release and the light stemcell naming the simulator's image"
  "$DIRECTOR" upload-release releases/web
  "$DIRECTOR" upload-stemcell "$OSDIR/light-stemcell.tgz"
  say "setting the cloud config (network private, zone nova)"
  "$DIRECTOR" -n update-cloud-config manifests/openstack/cloud-config.yml
  say "deploying manifests/openstack/web.yml"
  "$DIRECTOR" -n -d web deploy manifests/openstack/web.yml
  say "instances (VM cids are Nova server ids)"
  "$DIRECTOR" -d web instances --ps
  say "a request through the load balancer (http://$OS_LB/)"
  for _ in 1 2 3 4; do
    curl -fsS "http://$OS_LB/"
  done
  cat <<MSG

The director and the simulated OpenStack keep running in the background.
  . $DATA/env && bin/director -d web instances --ps
  . $DATA/cloud.env && openstack server list      (the cloud's own view; python3-openstackclient)
To stop both and remove every VM:
  make demo-down CLOUD=openstack
MSG
}

down_openstack() {
  if pid_running "$OS_DIRECTOR_PIDFILE" && [ -s "$DATA/env" ]; then
    # shellcheck disable=SC1090,SC1091
    . "$DATA/env"
    export DIRECTOR_TARGET DIRECTOR_TOKEN DIRECTOR_CA_CERT
    say "deleting deployment web"
    "$DIRECTOR" -n -d web delete-deployment --force || true
  fi
  say "stopping the director"
  stop_pid "$OS_DIRECTOR_PIDFILE"
  # cloudsim deletes the VM of every server it still has.
  say "stopping the simulated OpenStack"
  stop_pid "$OS_SIM_PIDFILE"
  rm -f "$DATA/cloud.env"
  say "demo stopped; state kept in $DATA (remove it for a fresh start)"
}

# ---- CLOUD=azure: cpi-azure on the simulated Azure -------------------------

AZDIR=$DATA/azure
AZ_SIM_PIDFILE=$AZDIR/cloudsim.pid
AZ_DIRECTOR_PIDFILE=$AZDIR/director.pid
AZ_NATS=${COMPLEAT_DEMO_NATS:-127.0.0.1:25556}
AZ_LB=${COMPLEAT_DEMO_AZURE_LB:-127.81.1.10:8080}

start_azure_cloudsim() {
  mkdir -p "$AZDIR"
  if pid_running "$AZ_SIM_PIDFILE"; then
    say "simulated Azure already running (cloudsim pid $(cat "$AZ_SIM_PIDFILE"))"
    return 0
  fi
  # The simulator keeps its state in memory: a new one is a new, empty
  # cloud, and a director that remembers the old one has nothing to manage.
  stop_pid "$AZ_DIRECTOR_PIDFILE"
  rm -rf "$AZDIR/director"
  say "starting the simulated Azure (Resource Manager and Entra ID over HTTPS; log in $AZDIR/cloudsim.log)"
  rm -f "$DATA/cloud.env"
  nohup "$CLOUDSIM" azure --data "$AZDIR" --env-file "$DATA/cloud.env" >"$AZDIR/cloudsim.log" 2>&1 &
  echo $! >"$AZ_SIM_PIDFILE"
  for _ in $(seq 1 300); do
    [ -s "$DATA/cloud.env" ] && [ -s "$AZDIR/azure-vars.yml" ] && return 0
    if ! pid_running "$AZ_SIM_PIDFILE"; then
      echo "cloudsim exited; its log:" >&2
      tail -n 30 "$AZDIR/cloudsim.log" >&2
      exit 1
    fi
    sleep 0.2
  done
  echo "the simulated Azure did not start within 60 s; see $AZDIR/cloudsim.log" >&2
  exit 1
}

start_azure_director() {
  # shellcheck disable=SC1090,SC1091
  . "$DATA/cloud.env"
  if pid_running "$AZ_DIRECTOR_PIDFILE"; then
    say "director already running (pid $(cat "$AZ_DIRECTOR_PIDFILE"))"
  else
    mkdir -p "$AZDIR/director"
    if [ ! -s "$AZDIR/admin.token" ]; then
      (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$AZDIR/admin.token")
    fi
    # A production-mode director whose cpi is cpi-azure, configured from
    # manifests/azure/cloudsim/cpi-config.yml and the simulator's variables.
    "$DIRECTOR" interpolate manifests/azure/cloudsim/cpi-config.yml -l "$AZDIR/azure-vars.yml" >"$AZDIR/cpi-config.yml.tmp"
    (umask 077; {
      cat <<YML
listen: $LISTEN
data_dir: director
tokens:
- name: admin
  token_file: admin.token
  scopes: [admin]
blobstore:
  type: fs
  public_url: https://$LISTEN
nats:
  listen: $AZ_NATS
  url: nats://$AZ_NATS
YML
      cat "$AZDIR/cpi-config.yml.tmp"
    } >"$AZDIR/director.yml")
    rm -f "$AZDIR/cpi-config.yml.tmp"
    say "starting a production-mode director with cpi-azure (serve --config $AZDIR/director.yml)"
    nohup "$DIRECTOR" serve --config "$AZDIR/director.yml" >"$AZDIR/director.log" 2>&1 &
    echo $! >"$AZ_DIRECTOR_PIDFILE"
  fi
  await_prod_director "Azure" "$AZDIR" "$AZ_DIRECTOR_PIDFILE"
}

up_azure() {
  start_azure_cloudsim
  start_azure_director
  export DIRECTOR_TARGET DIRECTOR_TOKEN DIRECTOR_CA_CERT
  IFS=: read -r az_pub az_offer az_sku az_version <<<"$COMPLEAT_AZURE_IMAGE"
  say "uploading the web release and a light stemcell naming the marketplace image $COMPLEAT_AZURE_IMAGE"
  "$DIRECTOR" upload-release releases/web
  mkdir -p build/stemcells
  "$DIRECTOR" create-stemcell --light --name compleat-azure --format azure-light \
    --cloud-property "image.publisher=$az_pub" --cloud-property "image.offer=$az_offer" \
    --cloud-property "image.sku=$az_sku" --cloud-property "image.version=$az_version" \
    --tarball build/stemcells/azure-light.tgz
  "$DIRECTOR" upload-stemcell build/stemcells/azure-light.tgz
  say "setting the cloud config (virtual network compleat-vnet, subnets z1 and z2)"
  "$DIRECTOR" -n update-cloud-config manifests/azure/cloudsim/cloud-config.yml
  say "deploying manifests/azure/cloudsim/web.yml"
  "$DIRECTOR" -n -d web deploy manifests/azure/cloudsim/web.yml
  say "instances (VM cids are ARM ids)"
  "$DIRECTOR" -d web instances --ps
  say "a request through the load balancer (http://$AZ_LB/)"
  for _ in 1 2 3 4; do
    curl -fsS "http://$AZ_LB/"
  done
  cat <<MSG

The director and the simulated Azure keep running in the background.
  . $DATA/env && bin/director -d web instances --ps
  . $DATA/cloud.env      (AZURE_* for the cloud's own clients; docs/cpi/azure.md shows curl)
To stop both and remove every VM:
  make demo-down CLOUD=azure
MSG
}

down_azure() {
  if pid_running "$AZ_DIRECTOR_PIDFILE" && [ -s "$DATA/env" ]; then
    # shellcheck disable=SC1090,SC1091
    . "$DATA/env"
    export DIRECTOR_TARGET DIRECTOR_TOKEN DIRECTOR_CA_CERT
    say "deleting deployment web"
    "$DIRECTOR" -n -d web delete-deployment --force || true
  fi
  say "stopping the director"
  stop_pid "$AZ_DIRECTOR_PIDFILE"
  # cloudsim deletes every VM it booted.
  say "stopping the simulated Azure"
  stop_pid "$AZ_SIM_PIDFILE"
  rm -f "$DATA/cloud.env"
  say "demo stopped; state kept in $DATA (remove it for a fresh start)"
}

case "${CLOUD}:${1:-}" in
:up) up ;;
:down) down ;;
aws:up) up_aws ;;
aws:down) down_aws ;;
openstack:up) up_openstack ;;
openstack:down) down_openstack ;;
azure:up) up_azure ;;
azure:down) down_azure ;;
*:up | *:down) echo "CLOUD=$CLOUD: unknown cloud (aws, azure, openstack, or none for the local CPI)" >&2; exit 2 ;;
*) echo "usage: [CLOUD=aws|azure|openstack] $0 up|down" >&2; exit 2 ;;
esac
