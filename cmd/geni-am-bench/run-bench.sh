#!/usr/bin/env bash
# make bench, second half: geni-am-bench over real TLS against an aggregate of
# its own (a private PostgreSQL, the dev PKI and clearinghouse, a 1,000-node
# inventory, in-process node agents when Docker is there), with pgbench -N in
# the same run. Results: bench.json, bench.svg and bench-provision.json.
set -euo pipefail
VAR=${BENCH_VAR:-var/bench}
AM=${BENCH_AM:-127.0.0.1:8021}
CH=${BENCH_CH:-127.0.0.1:8020}
ARGS=${BENCH_ARGS:---duration 10s --count 2000 --clients 1,8,32}
SLIVERS=${BENCH_PROVISION_SLIVERS:-100}
mkdir -p "$VAR"
./bin/geni-am dev --var "$VAR" --listen "$AM" --ch-listen "$CH" --inventory 1000 --log.level warn \
  > "$VAR/aggregate.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 90); do
  grep -q "serving the AM API" "$VAR/aggregate.log" 2>/dev/null && break
  kill -0 $pid 2>/dev/null || { cat "$VAR/aggregate.log"; exit 1; }
  sleep 1
done
db=$(sed -n 's/^ *url: *//p' "$VAR/geniam.yaml" | head -1 | tr -d '"')
common=(--am "https://$AM/" --ch "https://$CH/" --cert "$VAR/pki/alice-cert.pem" --key "$VAR/pki/alice-key.pem")

echo "== calls on a 1,000-node inventory (pgbench -N alongside)"
# shellcheck disable=SC2086
./bin/geni-am-bench "${common[@]}" --scenarios getversion,getversion-newconn,listresources,listresources-compressed,allocate-delete \
  --request docs/examples/request-one-container.xml --pgbench "$db" $ARGS --json bench.json --svg bench.svg

if [ -f "$VAR/dev/demo-request.xml" ]; then
  echo "== Provision of $SLIVERS slivers to geni_ready on the real node agents (node1, node2)"
  # Only the nodes with agents take slivers, with room for all of them.
  psql -X -q "$db" -c "UPDATE nodes SET drained = (agent_url = '') ;
                       UPDATE nodes SET capacity = greatest(capacity, ($SLIVERS + 1) / 2) WHERE name IN ('node1','node2');
                       UPDATE nodes SET drained = true WHERE name = 'node3'"
  ./bin/geni-am-bench "${common[@]}" --scenarios provision --request "$VAR/dev/demo-request.xml" \
    --provision-slivers "$SLIVERS" --provision-cycles 1 --ready-timeout 10m --poll 500ms --json bench-provision.json
  # Delete tears down asynchronously: let the jobs finish before the
  # aggregate (and its in-process agents) stop, or containers stay behind.
  for _ in $(seq 180); do
    left=$(psql -X -qtA "$db" -c "SELECT count(*) FROM jobs WHERE state IN ('queued','running')")
    [ "$left" = 0 ] && break
    sleep 1
  done
  psql -X -q "$db" -c "UPDATE nodes SET drained = false"
else
  echo "== Provision to geni_ready skipped: no Docker engine, so no node agents (see $VAR/aggregate.log)"
fi
