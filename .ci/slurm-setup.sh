#!/usr/bin/env bash
# Packages the SLURM end-to-end test needs (tests/slurm). Installs only; starts no daemon:
# tests/slurm/cluster.sh starts each one in a temporary directory and stops it by PID.
set -euo pipefail
if command -v slurmctld >/dev/null && command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null \
    && command -v munged >/dev/null && command -v sinfo >/dev/null; then
    echo "slurm-setup: packages already installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurmdbd slurm-client munge mariadb-server
