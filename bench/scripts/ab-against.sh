#!/bin/sh
# A/B of two lubdub builds in one run of the bench runner:
#
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release -p lubdub-bench)
#   LUBDUB_BENCH_B=/tmp/old/target/release/lubdub-bench \
#     cargo run --release -p lubdub-bench -- all --runs 5 \
#     --wrap-server bench/scripts/ab-against.sh
#
# Used as --wrap-server, it starts the scenario's "tokio" side as the
# lubdub side of the build at $LUBDUB_BENCH_B instead, so the table's peer
# column is the other lubdub and its ratio is this build / that one. It
# covers every row of `all`: the servers (`serve tokio ...`, the sweep's
# too), the timer children (`timers-child tokio ...`) and the client
# children (`client-child tokio ...`, against this build's server in both
# columns).
exe="$1"; shift
case "$1 $2" in
"serve tokio" | "timers-child tokio" | "client-child tokio")
  : "${LUBDUB_BENCH_B:?set LUBDUB_BENCH_B to the other build's lubdub-bench binary}"
  child="$1"
  shift 2
  exec "$LUBDUB_BENCH_B" "$child" lubdub "$@"
  ;;
esac
exec "$exe" "$@"
