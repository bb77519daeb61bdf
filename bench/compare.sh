#!/usr/bin/env bash
# Side-by-side benchmark: Warren vs RabbitMQ (Debian's rabbitmq-server) on this
# machine, same tool (warren-bench), same settings, alternating brokers, several
# rounds. Writes bench/results/compare.{md,json} and prints the table.
#
#   bench/compare.sh                      # all scenarios, 3 rounds
#   bench/compare.sh --rounds 1 --scenarios 1,2,3 --backlog 100000
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
scripts/deps
if ! command -v /usr/lib/rabbitmq/bin/rabbitmq-server >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rabbitmq-server
fi
cargo build --release --quiet --bin warren --bin warren-bench
exec .venv/bin/python bench/compare.py "$@"
