#!/usr/bin/env bash
# Apache Kafka for development and the test suite, from Maven Central only.
#
#     deploy/dev/kafka.sh fetch      # broker jars → build/kafka/libs (reused when present)
#     deploy/dev/kafka.sh start [1|3]  # a KRaft cluster on loopback until Ctrl-C
#
# The version is pinned in deploy/dev/kafka/pom.xml (kafka.version). The suite starts and stops
# its own brokers (tests/apache_kafka.py); `start` is for trying headway by hand.
set -euo pipefail
cd "$(dirname "$0")/../.."
LIBS=build/kafka/libs

fetch() {
  version=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' deploy/dev/kafka/pom.xml)
  [ "$(cat "$LIBS/.complete" 2>/dev/null)" = "$version" ] && return
  command -v java >/dev/null || { echo "kafka.sh: java is not installed (Java 17+)" >&2; exit 1; }
  command -v mvn >/dev/null || { echo "kafka.sh: mvn is not installed (Maven)" >&2; exit 1; }
  rm -rf "$LIBS"
  mvn -q -B -f deploy/dev/kafka/pom.xml dependency:copy-dependencies >&2
  echo "$version" > "$LIBS/.complete"
  echo "kafka.sh: Apache Kafka $version in $LIBS" >&2
}

case "${1:-fetch}" in
  fetch) fetch ;;
  start) fetch; exec "${PYTHON:-.venv/bin/python}" -m tests.apache_kafka --brokers "${2:-1}" ;;
  *) echo "usage: $0 fetch | start [1|3]" >&2; exit 2 ;;
esac
