#!/usr/bin/env bash
# Starts training on every worker of the TPU VM or pod slice, in the background, with the workdir on GCS.
set -euo pipefail
case ${BASH_SOURCE[0]} in */*) here=${BASH_SOURCE[0]%/*} ;; *) here=. ;; esac
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

CONFIG=${CONFIG:-}
RUN_NAME=${RUN_NAME:-}

usage() {
  printf '%s\n' "Usage: $PROG --config=configs/FILE.py [flags] [--config.FIELD=VALUE ...] [-- MORE_ARGS ...]

Runs, on every worker at once (JAX's multi-controller model: every host runs the same program, which calls
jax.distributed.initialize(), as ADAMIX_DISTRIBUTED=1 tells it to, and finds the pod's other hosts by itself):
  python -m experiments.main --config=CONFIG --workdir=gs://BUCKET/RUN_NAME [--config.FIELD=VALUE ...]
under nohup, in ~/$REMOTE_REPO_DIR with the virtual environment from setup.sh, appending to ~/$REMOTE_LOG on each
worker (see logs.sh). Running the same command again resumes from the last checkpoint in the workdir, e.g. after
a Spot TPU was preempted and recreated.

Flags:
  --config PATH            config file, relative to the repository (env CONFIG; required)
  --bucket BUCKET          GCS bucket, optionally with a path, for the workdir (env BUCKET; required)
  --run-name NAME          workdir under the bucket (env RUN_NAME; default: the config's file name without .py)
  --config.FIELD=VALUE     config overrides, passed through unchanged
  -- ARGS...               everything after -- is passed through unchanged too
$COMMON_HELP"
}

overrides=()
while (($#)); do
  case $1 in
    --config | --config=*)
      flag_value "$@"
      CONFIG=$VALUE
      ;;
    --config.*=*)
      overrides+=("$1")
      SHIFT=1
      ;;
    --config.*)
      flag_value "$@"
      overrides+=("$1=$VALUE")
      ;;
    --bucket | --bucket=*)
      flag_value "$@"
      BUCKET=$VALUE
      ;;
    --run-name | --run-name=*)
      flag_value "$@"
      RUN_NAME=$VALUE
      ;;
    --)
      shift
      overrides+=("$@")
      break
      ;;
    *) common_flag "$@" ;;
  esac
  shift "$SHIFT"
done

require CONFIG --config "the config file to train, e.g. configs/glue_mnli.py"
require BUCKET --bucket "the GCS bucket (gs://BUCKET or BUCKET) that holds the workdir"
bucket=${BUCKET#gs://}
while [[ $bucket == */ ]]; do bucket=${bucket%/}; done
[[ -n $bucket ]] || die "--bucket '$BUCKET' names no bucket"
if [[ -z $RUN_NAME ]]; then
  RUN_NAME=${CONFIG##*/}
  RUN_NAME=${RUN_NAME%.py}
fi
case $RUN_NAME in
  '' | /* | */) die "--run-name must be a relative path without a trailing /, not '$RUN_NAME'" ;;
esac
finish_settings

workdir=gs://$bucket/$RUN_NAME
train=("../$REMOTE_VENV/bin/python" -m experiments.main --config="$CONFIG" --workdir="$workdir")
train+=(${overrides[@]+"${overrides[@]}"})
# ADAMIX_DISTRIBUTED=1: the program calls jax.distributed.initialize(), which reads the slice's hosts from the TPU
# metadata (nothing in a GCE TPU VM's environment tells the program it is on a pod). stdin from /dev/null and both
# outputs to the log, so that ssh returns while training goes on; PYTHONUNBUFFERED keeps the log current.
remote="cd $REMOTE_REPO_DIR && { ADAMIX_DISTRIBUTED=1 PYTHONUNBUFFERED=1 nohup $(quote_words "${train[@]}")"
remote+=" >> ~/$REMOTE_LOG 2>&1 < /dev/null & }"
remote+=" && echo \"started on \$(hostname) as pid \$!, logging to ~/$REMOTE_LOG\""

run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${LOCATION[@]}" --worker=all --command="$remote"
