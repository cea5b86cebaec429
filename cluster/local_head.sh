#!/usr/bin/env bash
# Start, inspect and stop a local Ray head node on 127.0.0.1 for `ray job submit`.
#
#   eval "$(cluster/local_head.sh start)"        # prints the exports clients need; eval sets them
#   ray job submit --working-dir . --runtime-env jobs/runtime_env.yaml -- python jobs/pipeline.py ...
#   cluster/local_head.sh status
#   cluster/local_head.sh stop
#
# start options (each also read from the environment variable in brackets):
#   --port N            GCS port [RAY_COTD_HEAD_PORT]; default: a free port
#   --dashboard-port N  dashboard / job server port [RAY_COTD_DASHBOARD_PORT]; default: a free port
#   --num-cpus N        CPUs the head offers [RAY_COTD_NUM_CPUS]; default: all cores
#   --num-gpus N        GPUs the head offers [RAY_COTD_NUM_GPUS]; default: what Ray detects
#   --auth token|disabled   [RAY_AUTH_MODE]; default token
# common option:
#   --dir DIR           state directory [RAY_COTD_HEAD_DIR]; default /tmp/ray-cotd-head
#
# Why it looks like this (notes/ray-2.60.md §5):
# - Every port is chosen free (GCS, dashboard, Ray Client, dashboard agent), so the head can run
#   beside other Ray clusters on the machine, and `--temp-dir DIR/tmp` keeps its sessions, logs
#   and `ray_current_cluster` out of /tmp/ray, where a later `ray.init()` would find them.
# - Token auth (Ray 2.59+): the server enables it when RAY_AUTH_MODE=token, but clients only send
#   the token when they see RAY_AUTH_MODE=token too; otherwise every `ray job submit` fails with
#   "Missing authentication token". The head gets its own token file (DIR/auth_token, mode 600)
#   named by RAY_AUTH_TOKEN_PATH, so ~/.ray/auth_token is neither read nor written, and `start`
#   prints the same three variables for the client shell.
# - `stop` runs `ray stop`, never kill: killed processes leave the cluster address file pointing
#   at a dead head. `ray stop` ends EVERY Ray process on the machine, so it refuses while a GCS
#   that is not this head's is running (another user's cluster, a test session) unless --all.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -n "${RAY_BIN:-}" ]; then
  RAY=("$RAY_BIN")
elif [ -x "$ROOT/.venv/bin/ray" ]; then
  RAY=("$ROOT/.venv/bin/ray")
else
  RAY=(ray)
fi
PYTHON="$(dirname "$(command -v "${RAY[0]}")")/python"
[ -x "$PYTHON" ] || PYTHON=python3

DIR="${RAY_COTD_HEAD_DIR:-/tmp/ray-cotd-head}"
PORT="${RAY_COTD_HEAD_PORT:-}"
DASHBOARD_PORT="${RAY_COTD_DASHBOARD_PORT:-}"
NUM_CPUS="${RAY_COTD_NUM_CPUS:-}"
NUM_GPUS="${RAY_COTD_NUM_GPUS:-}"
AUTH="${RAY_AUTH_MODE:-token}"
STOP_ALL=0

say() { echo "[local_head] $*" >&2; }
die() { say "error: $*"; exit 1; }

usage() { sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2; }

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The state file holds plain KEY=VALUE lines written by `start`.
load_state() {
  [ -f "$DIR/head.env" ] || return 1
  # shellcheck disable=SC1091
  . "$DIR/head.env"
}

print_exports() {
  echo "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$DASHBOARD_PORT"
  echo "export RAY_AUTH_MODE=$AUTH"
  if [ "$AUTH" = token ]; then
    echo "export RAY_AUTH_TOKEN_PATH=$DIR/auth_token"
  fi
}

client_env() {
  export RAY_AUTH_MODE="$AUTH"
  if [ "$AUTH" = token ]; then export RAY_AUTH_TOKEN_PATH="$DIR/auth_token"; fi
}

head_alive() {
  client_env
  "${RAY[@]}" job list --address "http://127.0.0.1:$DASHBOARD_PORT" >/dev/null 2>&1
}

cmd_start() {
  case "$AUTH" in token|disabled) ;; *) die "--auth must be token or disabled, got '$AUTH'" ;; esac
  if (load_state && head_alive); then
    load_state
    say "already running (GCS 127.0.0.1:$PORT, dashboard http://127.0.0.1:$DASHBOARD_PORT)"
    print_exports
    return 0
  fi
  mkdir -p "$DIR/tmp"
  PORT="${PORT:-$(free_port)}"
  DASHBOARD_PORT="${DASHBOARD_PORT:-$(free_port)}"
  local client_port agent_port
  client_port="$(free_port)"
  agent_port="$(free_port)"
  if [ "$AUTH" = token ] && [ ! -s "$DIR/auth_token" ]; then
    (umask 077 && "$PYTHON" -c 'import secrets; print(secrets.token_hex(32))' >"$DIR/auth_token")
  fi
  local args=(start --head --node-ip-address=127.0.0.1 --port="$PORT"
    --dashboard-host=127.0.0.1 --dashboard-port="$DASHBOARD_PORT" --include-dashboard=true
    --ray-client-server-port="$client_port" --dashboard-agent-listen-port="$agent_port"
    --temp-dir="$DIR/tmp" --disable-usage-stats)
  [ -n "$NUM_CPUS" ] && args+=(--num-cpus="$NUM_CPUS")
  [ -n "$NUM_GPUS" ] && args+=(--num-gpus="$NUM_GPUS")
  client_env
  # Job entrypoints run `python ...` from the head's PATH: put this Ray's environment first, or a
  # job gets the system python without torch (the job supervisor inherits this PATH).
  PATH="$(dirname "$(command -v "${RAY[0]}")"):$PATH"
  export PATH
  say "ray ${args[*]}"
  "${RAY[@]}" "${args[@]}" >"$DIR/start.log" 2>&1 || { cat "$DIR/start.log" >&2; die "ray start failed"; }
  printf 'PORT=%s\nDASHBOARD_PORT=%s\nAUTH=%s\n' "$PORT" "$DASHBOARD_PORT" "$AUTH" >"$DIR/head.env"
  # `ray start` returns before the job server answers; submitting now would be refused.
  local waited=0
  until head_alive; do
    waited=$((waited + 1))
    [ "$waited" -le 60 ] || die "the job server at http://127.0.0.1:$DASHBOARD_PORT did not answer in 60 s; see $DIR/tmp/session_latest/logs"
    sleep 1
  done
  say "up: GCS 127.0.0.1:$PORT, dashboard http://127.0.0.1:$DASHBOARD_PORT, auth $AUTH, logs $DIR/tmp/session_latest/logs"
  print_exports
}

cmd_status() {
  load_state || { say "not started (no $DIR/head.env)"; exit 3; }
  if head_alive; then
    say "running: GCS 127.0.0.1:$PORT, dashboard http://127.0.0.1:$DASHBOARD_PORT, auth $AUTH"
    "${RAY[@]}" status --address "127.0.0.1:$PORT" >&2 || true
    print_exports
  else
    say "not answering at http://127.0.0.1:$DASHBOARD_PORT (stopped or crashed; logs in $DIR/tmp/session_latest/logs)"
    exit 3
  fi
}

# gcs_server processes that do not belong to this head (matched by its port).
foreign_gcs() {
  local pid args
  while read -r pid args; do
    case " $args " in *"--gcs_server_port=$PORT "*) ;; *) echo "$pid $args" ;; esac
  done < <(pgrep -a -x gcs_server || true)
}

cmd_stop() {
  load_state || { say "not started (no $DIR/head.env); nothing to stop"; return 0; }
  local others
  others="$(foreign_gcs)"
  if [ -n "$others" ] && [ "$STOP_ALL" != 1 ]; then
    say "other Ray clusters run on this machine, and \`ray stop\` would end them too:"
    echo "$others" | cut -c1-160 >&2
    die "stop them first, or pass --all to stop every Ray process here"
  fi
  client_env
  "${RAY[@]}" stop >"$DIR/stop.log" 2>&1 || { cat "$DIR/stop.log" >&2; die "ray stop failed"; }
  tail -n 1 "$DIR/stop.log" >&2
  rm -f "$DIR/head.env"
  say "stopped (logs kept in $DIR/tmp)"
}

[ $# -ge 1 ] || usage
COMMAND="$1"
shift
while [ $# -gt 0 ]; do
  case "$1" in
    --port) PORT="$2"; shift 2 ;;
    --dashboard-port) DASHBOARD_PORT="$2"; shift 2 ;;
    --num-cpus) NUM_CPUS="$2"; shift 2 ;;
    --num-gpus) NUM_GPUS="$2"; shift 2 ;;
    --auth) AUTH="$2"; shift 2 ;;
    --dir) DIR="$2"; shift 2 ;;
    --all) STOP_ALL=1; shift ;;
    -h|--help) usage ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

case "$COMMAND" in
  start) cmd_start ;;
  status) cmd_status ;;
  stop) cmd_stop ;;
  *) usage ;;
esac
