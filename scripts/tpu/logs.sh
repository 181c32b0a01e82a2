#!/usr/bin/env bash
# Shows the training log of one worker of the TPU (default: worker 0) or of all of them.
set -euo pipefail
case ${BASH_SOURCE[0]} in */*) here=${BASH_SOURCE[0]%/*} ;; *) here=. ;; esac
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

usage() {
  printf '%s\n' "Usage: $PROG [flags]

Prints the last lines of ~/$REMOTE_LOG (written by launch.sh) on a worker and follows it until Ctrl-C.

Flags:
  --worker N               worker index, or 'all' for every worker, interleaved (default: 0)
  --lines N                how many lines to start with (default: 100)
  --no-follow              print them and stop
$COMMON_HELP"
}

worker=0
lines=100
follow=1
while (($#)); do
  case $1 in
    --worker | --worker=*)
      flag_value "$@"
      worker=$VALUE
      ;;
    --lines | --lines=*)
      flag_value "$@"
      lines=$VALUE
      ;;
    --no-follow)
      follow=0
      SHIFT=1
      ;;
    *) common_flag "$@" ;;
  esac
  shift "$SHIFT"
done

case $worker in
  all) ;;
  '' | *[!0-9]*) die "--worker must be a number or 'all', not '$worker'" ;;
esac
case $lines in
  '' | *[!0-9]*) die "--lines must be a number, not '$lines'" ;;
esac
finish_settings

# -F keeps following across the log being created late or rotated.
tail=(tail -n "$lines")
if ((follow)); then
  tail+=(-F)
fi
run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${LOCATION[@]}" --worker="$worker" \
  --command="${tail[*]} ~/$REMOTE_LOG"
