#!/bin/sh
# A/B of two lubdub builds in one run of the bench runner:
#
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release -p lubdub-bench)
#   LUBDUB_BENCH_B=/tmp/old/target/release/lubdub-bench \
#     cargo run --release -p lubdub-bench -- echo-1 pingpong --runs 5 \
#     --wrap-server bench/scripts/ab-against.sh
#
# Used as --wrap-server, it starts the scenario's "tokio" server as the
# lubdub server of the build at $LUBDUB_BENCH_B instead, so the table's
# peer column is the other lubdub and its ratio is this build / that one.
# Only server scenarios apply (not timers, client or sweep).
exe="$1"; shift
if [ "$1" = serve ] && [ "$2" = tokio ]; then
  : "${LUBDUB_BENCH_B:?set LUBDUB_BENCH_B to the other build's lubdub-bench binary}"
  shift 2
  exec "$LUBDUB_BENCH_B" serve lubdub "$@"
fi
exec "$exe" "$@"
