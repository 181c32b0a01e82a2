#!/usr/bin/env bash
# Creates a Cloud TPU VM or pod slice for AdaMix training. See scripts/tpu/README.md for the whole workflow.
set -euo pipefail
case ${BASH_SOURCE[0]} in */*) here=${BASH_SOURCE[0]%/*} ;; *) here=. ;; esac
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

usage() {
  printf '%s\n' "Usage: $PROG [flags]

Creates the TPU VM (e.g. v4-8) or pod slice (e.g. v4-32: 4 workers) that setup.sh, launch.sh and logs.sh use.
Billing starts now and runs until delete.sh, whether or not anything trains.

Flags:
  --accelerator-type TYPE  e.g. v4-32, v5p-16, v5litepod-16, v6e-16 (env ACCELERATOR_TYPE; required)
  --version VERSION        TPU software version (env TPU_VERSION; default: tpu-ubuntu2204-base, for v4 and older;
                           v5e: v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e)
  --spot                   a Spot TPU: much cheaper, preempted at any time (env SPOT=spot)
  --preemptible            a preemptible TPU: as cheap, preempted within 24h (env SPOT=preemptible)
$COMMON_HELP"
}

while (($#)); do
  case $1 in
    --accelerator-type | --accelerator-type=*)
      flag_value "$@"
      ACCELERATOR_TYPE=$VALUE
      ;;
    --version | --version=*)
      flag_value "$@"
      TPU_VERSION=$VALUE
      ;;
    --spot)
      SPOT=spot
      SHIFT=1
      ;;
    --preemptible)
      SPOT=preemptible
      SHIFT=1
      ;;
    *) common_flag "$@" ;;
  esac
  shift "$SHIFT"
done

require ACCELERATOR_TYPE --accelerator-type "the TPU type and size, e.g. v4-32"
require TPU_VERSION --version "the TPU software version, e.g. tpu-ubuntu2204-base"
case $SPOT in
  '' | 0 | false | no) provisioning= ;;
  1 | true | yes | spot) provisioning=--spot ;;
  preemptible) provisioning=--preemptible ;;
  *) die "SPOT must be empty, 0, 1, spot or preemptible, not '$SPOT'" ;;
esac
finish_settings

run gcloud compute tpus tpu-vm create "$TPU_NAME" "${LOCATION[@]}" \
  --accelerator-type="$ACCELERATOR_TYPE" --version="$TPU_VERSION" ${provisioning:+"$provisioning"}
