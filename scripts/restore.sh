#!/usr/bin/env bash
#
# Restores a coffer backup archive into the docker compose deployment of deploy/docker-compose.yml.
# Works from any folder. The whole runbook, with checks and the manual fallback: deploy/RESTORE.md.
#
#   scripts/restore.sh FILE [coffer restore options...]
#
# Exit status: 0 restored and the app healthy; 2 refused before anything was changed (usage, missing
# or unreadable file, database not up); 13 cancelled at the prompt (coffer's own code for that);
# 20 restored, but the app did not become healthy; anything else is coffer restore's own status, and
# then the database and the upload folders are unchanged.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/restore.sh FILE [options]

Restores a coffer backup archive (.zip or .zip.crypt) into the docker compose deployment in deploy/:
checks that the app image can read FILE, starts the database, stops the app, runs `coffer restore`
in a one-off app container with FILE mounted read-only, then starts the app and checks its health.

The restore is all or nothing: if it fails, the database and the upload folders are left exactly as
they were, and the app is started again if it was running.

Options (passed on to coffer restore):
  --key-file PATH      AES-256 key file (as written by `coffer keygen`), for an encrypted archive
  --key -              read the AES-256 key from standard input (prompted on a terminal)
  --passphrase         the archive is encrypted with a passphrase (prompted on a terminal)
  --database-url URL   restore into another database than the deployment's DATABASE_URL (a password
                       in it shows in ps: prefer --database-url-file)
  --database-url-file PATH
                       the same, with the URL read from a file (its first line)
  --skip-files         restore only the database
  --skip-database      restore only the upload folders
  --force              accept an archive from a newer coffer build, or one missing tables
  -y, --yes            do not ask for confirmation (it is asked only on a terminal)
  -h, --help           show this help

Environment:
  COMPOSE                  Compose v2 command (default: docker compose; e.g. "sudo docker compose")
  RESTORE_HEALTH_TIMEOUT   seconds to wait for the app to answer its health check (default: 120)

The app container runs as uid 10001. A private archive (not readable by all, e.g. mode 0600) and the
key file are handed to it as temporary copies it can read, next to the archive (or in TMPDIR),
removed when the script ends; an archive readable by all is mounted as it is.

Exit status: 0 restored and healthy; 2 refused before anything changed; 13 cancelled; 20 restored
but the app is not healthy; other: coffer restore failed, and nothing was changed.
EOF
}

say() { printf 'restore.sh: %s\n' "$*" >&2; }
# Refusals before anything was touched.
refuse() {
  say "$*"
  exit 2
}

script_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
repo_dir=$(cd "$script_dir/.." && pwd -P)
compose_file="$repo_dir/deploy/docker-compose.yml"
# Split into words on purpose: COMPOSE may be e.g. "sudo docker compose". Compose v2 is needed
# (up --wait, ps --status).
read -r -a compose <<<"${COMPOSE:-docker compose}"
health_timeout=${RESTORE_HEALTH_TIMEOUT:-120}

dc() { "${compose[@]}" -f "$compose_file" "$@"; }

# ---- arguments ---------------------------------------------------------------------------------
archive=''
key_file=''
url_file=''
assume_yes=0
skip_files=0
skip_database=0
restore_args=()
while (($# > 0)); do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    -y | --yes) assume_yes=1 ;;
    --key-file)
      (($# >= 2)) || refuse '--key-file needs a path'
      key_file=$2
      shift
      ;;
    --key-file=*) key_file=${1#--key-file=} ;;
    --database-url-file)
      (($# >= 2)) || refuse '--database-url-file needs a path'
      url_file=$2
      shift
      ;;
    --database-url-file=*) url_file=${1#--database-url-file=} ;;
    --key | --database-url)
      (($# >= 2)) || refuse "$1 needs a value"
      restore_args+=("$1" "$2")
      shift
      ;;
    --skip-files)
      skip_files=1
      restore_args+=("$1")
      ;;
    --skip-database)
      skip_database=1
      restore_args+=("$1")
      ;;
    -?*) restore_args+=("$1") ;; # anything else: coffer restore judges it
    *)
      [[ -z $archive ]] || refuse "give one archive, not '$archive' and '$1' (see --help)"
      archive=$1
      ;;
  esac
  shift
done

# A bind mount is written SOURCE:TARGET:ro, so a ':' in the path cannot be passed on.
host_path() {
  local what=$1 file=$2 dir
  [[ -e $file ]] || refuse "$what not found: $file"
  [[ -f $file ]] || refuse "$what is not a regular file: $file"
  [[ -r $file ]] || refuse "$what is not readable: $file"
  dir=$(cd "$(dirname "$file")" && pwd -P)
  [[ $dir/$(basename "$file") != *:* ]] || refuse "$what path contains ':', which a docker volume option cannot carry: $file (move or link it elsewhere)"
  printf '%s/%s\n' "$dir" "$(basename "$file")"
}

[[ -n $archive ]] || refuse 'name the archive file to restore (see --help)'
if ((skip_files && skip_database)); then
  refuse '--skip-files and --skip-database together leave nothing to restore'
fi
[[ $archive != - ]] || refuse 'the archive must be a file here (the container reads it through a read-only mount), not standard input'
abs_archive=$(host_path 'archive' "$archive")
abs_key=''
if [[ -n $key_file ]]; then
  abs_key=$(host_path 'key file' "$key_file")
fi
abs_url_file=''
if [[ -n $url_file ]]; then
  abs_url_file=$(host_path 'database URL file' "$url_file")
fi
[[ -f $compose_file ]] || refuse "compose file not found: $compose_file"
command -v "${compose[0]}" >/dev/null 2>&1 || refuse "${compose[0]} not found (set COMPOSE to the compose command)"

# ---- confirmation (only where someone can answer) -----------------------------------------------
if ((skip_files)); then
  replaced='the database'
elif ((skip_database)); then
  replaced='the upload folders'
else
  replaced='the database and the upload folders'
fi
if ((assume_yes == 0)) && [[ -t 0 ]]; then
  printf 'This stops the coffer app and replaces ALL of %s with the contents of\n  %s\nType "yes" to continue: ' "$replaced" "$abs_archive" >&2
  read -r answer || answer=''
  [[ $answer == yes ]] || {
    say 'cancelled; nothing was changed'
    exit 13
  }
fi

# ---- cleanup on every exit ------------------------------------------------------------------------
stage_dir=''
app_was_running=0
app_stopped=0
on_exit() {
  local status=$?
  [[ -z $stage_dir ]] || rm -rf -- "$stage_dir"
  # Reached only on an unexpected stop (an error, Ctrl-C): the normal paths restart the app themselves.
  if ((app_stopped && app_was_running)); then
    say 'starting the app again, as it was running before'
    dc up -d app || say 'could not start the app: docker compose up -d app'
  fi
  exit "$status"
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- files for the container ------------------------------------------------------------------------
# The container runs as uid 10001, which can read a mounted file only through its "others" permission
# bits. Keys are private, and so are most archives (`coffer backup -o FILE` writes mode 0600, as does
# a shell under umask 077). Such a file is handed over as a copy readable by all, inside a folder that
# only the operator can enter (mktemp -d makes it 0700; a bind mount does not need to pass through it),
# removed on exit. The folder goes next to the archive, where there is room for another copy of it
# (/tmp may be a small tmpfs), or into TMPDIR when that folder is not writable.
make_stage_dir() {
  [[ -z $stage_dir ]] || return 0
  stage_dir=$(mktemp -d "$(dirname "$abs_archive")/.coffer-restore.XXXXXX" 2>/dev/null) ||
    stage_dir=$(mktemp -d "${TMPDIR:-/tmp}/coffer-restore.XXXXXX")
  [[ $stage_dir != *:* ]] || refuse "the temporary folder path contains ':': $stage_dir (set TMPDIR)"
}
readable_by_all() { [[ -n $(find "$1" -maxdepth 0 -perm -o=r 2>/dev/null) ]]; }
handed_over=''
hand_over() { # FILE WHERE: sets handed_over to a copy readable by all (no $(...): the folder is global)
  make_stage_dir
  handed_over=$stage_dir/$2
  mkdir -p "$(dirname "$handed_over")"
  cp -- "$1" "$handed_over" || refuse "cannot copy $1 into $stage_dir; nothing was changed"
  chmod 0644 "$handed_over"
}

archive_source=$abs_archive
if ! readable_by_all "$abs_archive"; then
  say 'the archive is private; the container (uid 10001) gets a temporary readable copy next to it'
  say '  (an archive readable by all is mounted as it is: chmod o+r suits an encrypted one)'
  # Under its own name: the container sees it as such (see below).
  hand_over "$abs_archive" "archive/$(basename "$abs_archive")"
  archive_source=$handed_over
fi
# Mounted under its own name, which coffer records in the `restore` row of backup_log (in a folder of
# its own, so that no name can collide with the key file).
in_container=/restore/archive/$(basename "$abs_archive")
mounts=(-v "$archive_source:$in_container:ro")
readable=("$in_container")
if [[ -n $abs_key ]]; then
  hand_over "$abs_key" key
  mounts+=(-v "$handed_over:/restore/key:ro")
  readable+=(/restore/key)
  restore_args+=(--key-file /restore/key)
fi
if [[ -n $abs_url_file ]]; then
  hand_over "$abs_url_file" database-url
  mounts+=(-v "$handed_over:/restore/database-url:ro")
  readable+=(/restore/database-url)
  restore_args+=(--database-url-file /restore/database-url)
fi

# Standard input stays attached (for --key - or --passphrase); a pseudo-terminal only when there is one.
# (Arrays that may be empty are expanded as ${a[@]+"${a[@]}"}: bash before 4.4, as on macOS, takes an
# empty "${a[@]}" for an unset variable under set -u.)
tty=()
[[ -t 0 ]] || tty=(-T)

# ---- 1. preflight: before anything stops, the app image (built now if missing) can read the files ---
# shellcheck disable=SC2016 # JavaScript, not shell: the backquotes are a template literal
check_js='const fs = require("fs");
for (const f of process.argv.slice(1)) {
  try { fs.closeSync(fs.openSync(f, "r")); } catch (e) { console.error(`cannot read ${f}: ${e.code || e.message}`); process.exitCode = 1; }
}'
say "checking that the app container can read $abs_archive"
# </dev/null here and for `exec` below: a `run` or `exec` forwards standard input to the container,
# and must not swallow a key or passphrase piped in for the restore itself.
if ! dc run --rm --no-deps -T "${mounts[@]}" --entrypoint node app -e "$check_js" "${readable[@]}" </dev/null; then
  refuse 'the check in a one-off app container failed (see above); nothing was changed'
fi

# ---- 2. database up, app down --------------------------------------------------------------------
say 'starting the database and waiting until it is healthy'
dc up -d --wait db || refuse 'the database did not start or did not become healthy; nothing was changed'
# When in doubt, count the app as running, so that a failed restore does not leave it stopped.
running=$(dc ps --status running --quiet app) || running='unknown'
[[ -z $running ]] || app_was_running=1
say 'stopping the app'
app_stopped=1
dc stop app

# ---- 3. restore ------------------------------------------------------------------------------------
health_js='fetch("http://127.0.0.1:" + (process.env.PORT || 8000) + "/api/v1/health", { signal: AbortSignal.timeout(5000) })
  .then(async (r) => { console.log(await r.text()); process.exit(r.ok ? 0 : 1); },
        (e) => { console.error(String((e.cause && e.cause.code) || e.message)); process.exit(1); })'

# Starts the app and waits until its health endpoint answers 200, from inside the container (so it
# works whatever the published port and without curl on the host).
start_app_and_check() {
  local deadline out=''
  dc up -d app
  app_stopped=0
  deadline=$((SECONDS + health_timeout))
  while :; do
    if out=$(dc exec -T app node -e "$health_js" 2>&1 </dev/null); then
      say "the app is healthy: $out"
      return 0
    fi
    ((SECONDS < deadline)) || break
    sleep 2
  done
  say "the app did not answer its health check within ${health_timeout}s: ${out:-no answer}"
  say "see: ${compose[*]} -f $compose_file logs app"
  return 1
}

say "restoring $abs_archive (this replaces $replaced)"
# USER names the operator in the `restore` row that coffer writes to backup_log.
if dc run --rm --no-deps ${tty[@]+"${tty[@]}"} -e "USER=${SUDO_USER:-${USER:-unknown}}" "${mounts[@]}" \
  app restore "$in_container" --yes ${restore_args[@]+"${restore_args[@]}"}; then
  status=0
else
  status=$?
fi

if ((status != 0)); then
  say "restore FAILED (exit status $status): the database and the upload folders are unchanged (restore is all or nothing)."
  say 'staging leftovers in the data volume are removed by the next restore or app start.'
  if ((app_was_running)); then
    say 'starting the app again with its previous data'
    start_app_and_check || true
  else
    say 'the app was not running before and stays stopped.'
  fi
  exit "$status"
fi

# ---- 4. app up, health ------------------------------------------------------------------------------
say 'restore finished; starting the app'
if ! start_app_and_check; then
  say 'the archive WAS restored, but the app is not healthy.'
  exit 20
fi
say "done: $abs_archive is restored and the app is healthy."
say "check it: ${compose[*]} -f $compose_file run --rm -T app users list"
