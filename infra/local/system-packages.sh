#!/usr/bin/env bash
# The Debian packages the local stack and the tests need, installed when missing: the one step
# before the README's two commands (`make up`, `make test`) and CI (`.ci/run`) call them.
#
# Idempotent: a machine that has every binary does nothing. As root it installs with apt-get,
# quietly; otherwise it prints the one command to run and exits 1, so that `make` stops before
# a service fails to start for want of a binary.
#
#   redis-server  Redis (and a Redis Cluster of several)           package redis-server
#   java          Kafka 4 in KRaft mode (its jars come via Maven)  package openjdk-17-jre-headless
#   mvn           fetches Kafka's jars once                        package maven
#   promtool      checks and tests the alert rules                 package prometheus
#   chromium      the console's browser tests (headless)           package chromium
set -euo pipefail

packages=()
need() {  # need BINARY PACKAGE
  command -v "$1" >/dev/null 2>&1 || packages+=("$2")
}
need redis-server redis-server
need java openjdk-17-jre-headless
need mvn maven
need promtool prometheus
need chromium chromium

if ((${#packages[@]} == 0)); then
  exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
  echo "missing system packages; install them with:" >&2
  echo "  sudo apt-get install -y --no-install-recommends ${packages[*]}" >&2
  exit 1
fi
echo "installing system packages: ${packages[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
