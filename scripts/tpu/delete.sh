#!/usr/bin/env bash
# Deletes the TPU VM or pod slice (and the disks of its workers), after asking unless --yes.
set -euo pipefail
case ${BASH_SOURCE[0]} in */*) here=${BASH_SOURCE[0]%/*} ;; *) here=. ;; esac
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

usage() {
  printf '%s\n' "Usage: $PROG [flags]

Deletes the TPU, which stops its billing. Everything on the workers' disks goes with it; the workdir on the bucket
(checkpoints, TensorBoard logs) stays. Asks first unless --yes.

Flags:
  -y, --yes          delete without asking
$COMMON_HELP"
}

yes=0
while (($#)); do
  case $1 in
    -y | --yes)
      yes=1
      SHIFT=1
      ;;
    *) common_flag "$@" ;;
  esac
  shift "$SHIFT"
done
finish_settings

if [[ $DRY_RUN == 0 && $yes == 0 ]]; then
  answer=
  # read fails at end of input (no terminal, nothing piped in), which leaves the answer empty: no.
  read -r -p "Delete TPU $TPU_NAME in $ZONE? Its workers' disks go with it. [y/N] " answer || true
  case $answer in
    y | Y | yes | YES | Yes) ;;
    *) die "not deleting $TPU_NAME (answer y, or pass --yes)" ;;
  esac
fi

# --quiet: the question above (or --yes) replaces gcloud's own.
run gcloud compute tpus tpu-vm delete "$TPU_NAME" "${LOCATION[@]}" --quiet
