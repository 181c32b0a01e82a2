# shellcheck shell=bash
# Settings, flag parsing and the command runner shared by the scripts in scripts/tpu/.
#
# Sourced by each script, never run. Each setting comes from the environment variable of the same name or from a
# flag (the flag wins). Only bash builtins are used (bash 3.2, macOS's, is enough), so `--dry-run` needs nothing on
# PATH but bash; gcloud is needed only to run the commands for real.

# The settings are read by the scripts that source this file, which shellcheck cannot see from here.
# shellcheck disable=SC2034

TPU_NAME=${TPU_NAME:-}
ZONE=${ZONE:-}
PROJECT=${PROJECT:-}
ACCELERATOR_TYPE=${ACCELERATOR_TYPE:-}
TPU_VERSION=${TPU_VERSION:-tpu-ubuntu2204-base}
SPOT=${SPOT:-}
REPO_URL=${REPO_URL:-}
BRANCH=${BRANCH:-main}
PYTHON_VERSION=${PYTHON_VERSION:-3.11}
BUCKET=${BUCKET:-}
DRY_RUN=${DRY_RUN:-0}

# Where setup.sh puts things on every worker, relative to the worker's home directory; launch.sh and logs.sh
# rely on the same places.
readonly REMOTE_REPO_DIR=adamix-jax
readonly REMOTE_VENV=adamix-venv
readonly REMOTE_LOG=adamix-jax.log

PROG=${0##*/}

COMMON_HELP="  --name NAME              TPU VM or pod slice name (env TPU_NAME; required)
  --zone ZONE              its zone, e.g. us-central2-b (env ZONE; required)
  --project PROJECT        Google Cloud project (env PROJECT; default: gcloud's configured project)
  --dry-run                print the gcloud commands, one a line, instead of running them (env DRY_RUN=1)
  -h, --help               show this help"

die() {
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit 2
}

# Reads the value of `--flag=value` or `--flag value` into VALUE; SHIFT says how many words the flag used.
flag_value() {
  case $1 in
    *=*)
      VALUE=${1#*=}
      SHIFT=1
      ;;
    *)
      if (($# < 2)) || [[ $2 == -* ]]; then
        die "$1 needs a value"
      fi
      VALUE=$2
      SHIFT=2
      ;;
  esac
}

# Handles the flags every script takes and dies on any other; the caller shifts by SHIFT.
common_flag() {
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --dry-run)
      DRY_RUN=1
      SHIFT=1
      ;;
    --name | --name=*)
      flag_value "$@"
      TPU_NAME=$VALUE
      ;;
    --zone | --zone=*)
      flag_value "$@"
      ZONE=$VALUE
      ;;
    --project | --project=*)
      flag_value "$@"
      PROJECT=$VALUE
      ;;
    *) die "unknown flag: $1 (see $PROG --help)" ;;
  esac
}

# Dies unless the setting named $1 is set; the message names its flag ($2) and says what it is ($3).
require() {
  [[ -n ${!1} ]] || die "missing $2 (or env $1): $3"
}

# Checks the settings every script needs, sets LOCATION (the --zone/--project flags of every gcloud command) and,
# unless this is a dry run, makes sure gcloud is there. Call it after the script's own checks.
finish_settings() {
  require TPU_NAME --name "the name of the TPU VM or pod slice"
  require ZONE --zone "the zone of the TPU, e.g. us-central2-b"
  case $DRY_RUN in
    0 | 1) ;;
    *) die "DRY_RUN must be 0 or 1, not '$DRY_RUN'" ;;
  esac
  LOCATION=(--zone="$ZONE")
  if [[ -n $PROJECT ]]; then
    LOCATION+=(--project="$PROJECT")
  fi
  if [[ $DRY_RUN == 0 ]] && ! command -v gcloud >/dev/null 2>&1; then
    die "gcloud not found on PATH: install the Google Cloud CLI (https://cloud.google.com/sdk/docs/install)," \
      "or pass --dry-run to print the commands instead"
  fi
}

# Prints the words as one line that a POSIX shell reads back as the same words, so that a printed command can be
# copied and pasted: plain words stay bare, others are single-quoted, only after the = in `--flag=value`.
quote_words() {
  local word prefix sq="'" escaped_sq="'\"'\"'" quoted=()
  for word in "$@"; do
    prefix=
    if [[ $word == --*=* && ${word%%=*} != *[!a-zA-Z0-9_.-]* ]]; then
      prefix=${word%%=*}=
      word=${word#*=}
    fi
    case $word in
      '' | *[!a-zA-Z0-9_@%+=:,./-]*) word="'${word//$sq/$escaped_sq}'" ;;
    esac
    quoted+=("$prefix$word")
  done
  local IFS=' '
  printf '%s\n' "${quoted[*]}"
}

# Prints the command on stdout in a dry run; otherwise echoes it on stderr and runs it.
run() {
  if [[ $DRY_RUN == 1 ]]; then
    quote_words "$@"
  else
    printf '+ %s\n' "$(quote_words "$@")" >&2
    "$@"
  fi
}
