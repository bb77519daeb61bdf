#!/usr/bin/env bash
# Side-by-side benchmark: Warren vs RabbitMQ (Debian's rabbitmq-server) on this
# machine, same tool (warren-bench), same settings, alternating brokers, several
# rounds. Writes bench/results/compare.{md,json} and prints the table.
#
#   bench/compare.sh                      # all scenarios, 3 rounds
#   bench/compare.sh --rounds 1 --scenarios 1,2,3 --backlog 100000
#   bench/compare.sh --scenarios 1,2 --rate 5000    # equal load: CPU per message of both brokers
#   bench/compare.sh --scenarios 2 --profile plain  # as ordinary client code: one ack per message, no pipelining
# Every row also reports the broker's and the client's CPU per message.
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
