# Sourced by the pipeline benchmarks (bench-fresh, bench-soak): starts the release gateway and
# compactor with their defaults on a new 3-partition topic and stream of the local stack, and
# stops them on exit. Back-pressure is off; the gateway's Watermark reads the bench compactor's group. Needs `deploy/local/stack up` and `cargo build --release -p tlake-cli
# -p tlake-ingest-gateway -p tlake-compactor --bins`. Sets: bin, run, stream, gw, cmp.
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/telemetry-lake/target}
eval "$(deploy/local/stack env)"
bin=$CARGO_TARGET_DIR/release
for b in tlake tlake-gateway tlake-compactor; do
  [ -x "$bin/$b" ] || { echo "no $bin/$b: cargo build --release -p tlake-cli -p tlake-ingest-gateway -p tlake-compactor --bins" >&2; exit 1; }
done
run=$(mktemp -d -t tlake-bench.XXXX)
topic=tlake-bench-$(date +%s)
stream=bench_$(date +%s)
deploy/local/stack kafka-topics --create --topic "$topic" --partitions 3 --replication-factor 1 >/dev/null
printf 'listen = "127.0.0.1:4400"\nmetrics_listen = "127.0.0.1:9400"\notlp_http_listen = "127.0.0.1:4410"\n[streams]\n%s = "%s"\n[backpressure]\nmax_lag_records = 0\ncompactor_group = "bench-%s"\n' "$stream" "$topic" "$topic" > "$run/gw.toml"
printf 'metrics_listen = "127.0.0.1:9401"\n[kafka]\nbrokers = "%s"\ngroup_id = "bench-%s"\ntopics = ["%s"]\n[catalog]\nuri = "%s"\nwarehouse = "%s"\nnamespace = "logs"\n[s3]\nendpoint = "%s"\nregion = "%s"\npath_style = true\n' \
  "$TLAKE_KAFKA_BROKERS" "$topic" "$topic" "$TLAKE_CATALOG_URI" "$TLAKE_WAREHOUSE" "$TLAKE_S3_ENDPOINT" "$TLAKE_S3_REGION" > "$run/cmp.toml"
AWS_ACCESS_KEY_ID=$TLAKE_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$TLAKE_S3_SECRET_KEY "$bin/tlake-gateway" --config "$run/gw.toml" > "$run/gw.log" 2>&1 &
gw=$!
# TLAKE_BENCH_COMPACTOR_ENV: extra NAME=VALUE words for the compactor alone (e.g. glibc's
# MALLOC_ARENA_MAX=2), so an allocator setting can be compared without touching the rest.
# shellcheck disable=SC2086
env ${TLAKE_BENCH_COMPACTOR_ENV:-} AWS_ACCESS_KEY_ID=$TLAKE_S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$TLAKE_S3_SECRET_KEY "$bin/tlake-compactor" --config "$run/cmp.toml" > "$run/cmp.log" 2>&1 &
cmp=$!
trap 'kill $gw $cmp 2>/dev/null || true' EXIT
sleep 3
