#!/bin/bash
# Runs a Kafka main class on the image's JRE with every jar of /opt/kafka/libs, like the script
# of this name in Kafka's distribution: the broker (kafka.Kafka) logs INFO to stdout with
# KAFKA_HEAP_OPTS (default 512 MiB), the command-line tools log warnings to stderr with a small
# heap, so `kubectl exec kafka-0 -- kafka-topics.sh ...` prints only what the tool answers.
set -euo pipefail
home="${KAFKA_HOME:-/opt/kafka}"
class="$1"
if [ "$class" = kafka.Kafka ]; then
  heap="${KAFKA_HEAP_OPTS:--Xmx512m -Xms512m}"
  jvm="-XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError"
  logging="$home/config/log4j2.xml"
else
  heap="${KAFKA_HEAP_OPTS:--Xmx128m}"
  jvm="-XX:+UseSerialGC -XX:TieredStopAtLevel=1"
  logging="$home/config/tools-log4j2.xml"
fi
# shellcheck disable=SC2086  # heap, jvm and KAFKA_OPTS hold several flags
exec java $heap $jvm -Djava.awt.headless=true -Dlog4j2.configurationFile="$logging" \
  ${KAFKA_OPTS:-} -cp "$home/libs/*" "$@"
