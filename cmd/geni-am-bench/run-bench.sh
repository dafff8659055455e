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
VAR10K=${BENCH_VAR_10K:-$VAR-10k}
AM10K=${BENCH_AM_10K:-127.0.0.1:8023}
CH10K=${BENCH_CH_10K:-127.0.0.1:8022}
PROFILE=${BENCH_PROFILE:-bench-cpu.pprof}

# start_aggregate VAR AM CH NODES [flags]: a dev aggregate of its own; sets
# pid, db and common (geni-am-bench's connection flags).
pid=
trap 'stop_aggregate' EXIT
stop_aggregate() { if [ -n "$pid" ]; then kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; pid=; fi; }
start_aggregate() {
  local var=$1 am=$2 ch=$3 nodes=$4; shift 4
  mkdir -p "$var"
  ./bin/geni-am dev --var "$var" --listen "$am" --ch-listen "$ch" --inventory "$nodes" --log.level warn "$@" \
    > "$var/aggregate.log" 2>&1 &
  pid=$!
  for _ in $(seq 90); do
    grep -q "serving the AM API" "$var/aggregate.log" 2>/dev/null && break
    kill -0 $pid 2>/dev/null || { cat "$var/aggregate.log"; exit 1; }
    sleep 1
  done
  db=$(sed -n 's/^ *url: *//p' "$var/geniam.yaml" | head -1 | tr -d '"')
  common=(--am "https://$am/" --ch "https://$ch/" --cert "$var/pki/alice-cert.pem" --key "$var/pki/alice-key.pem")
}

# The CPU profile of the 1,000-node aggregate (go tool pprof bin/geni-am $PROFILE).
start_aggregate "$VAR" "$AM" "$CH" 1000 --cpuprofile "$PROFILE"

echo "== calls on a 1,000-node inventory (pgbench -N alongside)"
# shellcheck disable=SC2086
./bin/geni-am-bench "${common[@]}" --scenarios getversion,getversion-newconn,listresources,listresources-compressed,getversion-pairs,allocate-delete \
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
stop_aggregate

echo "== 10,000 nodes with 50,000 live slivers (pgbench -N alongside; p99s against the 1,000-node run)"
start_aggregate "$VAR10K" "$AM10K" "$CH10K" 10003 # the 3 demo nodes and 10,000 bench nodes
# 5 slivers on each of the 10,000 bench nodes, in 500 slices, expiring in a
# week (the reaper leaves them alone); skipped when an earlier run seeded them.
psql -X -q -o /dev/null -v ON_ERROR_STOP=1 "$db" <<'SQL'
BEGIN;
SELECT set_config('geniam.event', 'bench-seed', true);
INSERT INTO slices (urn) SELECT 'urn:publicid:IDN+bench+slice+seed' || s FROM generate_series(0, 499) s ON CONFLICT DO NOTHING;
WITH n AS (SELECT name, row_number() OVER (ORDER BY name) - 1 AS k FROM nodes WHERE hardware_type = 'bench-host' AND NOT retired ORDER BY name LIMIT 10000)
INSERT INTO slivers (urn, slice_urn, node_name, sliver_type, client_id, allocation_state, operational_state, expires_at, created_by)
SELECT 'urn:publicid:IDN+bench+sliver+seed' || (n.k * 5 + j), 'urn:publicid:IDN+bench+slice+seed' || ((n.k * 5 + j) % 500), n.name,
       'container', 'seed' || (n.k * 5 + j), 'geni_allocated', 'geni_pending_allocation', now() + interval '7 days', 'urn:publicid:IDN+bench+user+seed'
FROM n, generate_series(0, 4) j
WHERE NOT EXISTS (SELECT 1 FROM slivers WHERE urn LIKE 'urn:publicid:IDN+bench+sliver+seed%');
INSERT INTO node_slots (node_name, slot_no, sliver_urn)
SELECT v.node_name, row_number() OVER (PARTITION BY v.node_name ORDER BY v.urn) - 1, v.urn FROM slivers v
WHERE v.urn LIKE 'urn:publicid:IDN+bench+sliver+seed%' AND NOT EXISTS (SELECT 1 FROM node_slots s WHERE s.sliver_urn = v.urn);
COMMIT;
ANALYZE;
SQL
echo "$(psql -X -qtA "$db" -c "SELECT count(*) FROM nodes WHERE NOT retired") nodes, $(psql -X -qtA "$db" -c "SELECT count(*) FROM slivers") live slivers"
# shellcheck disable=SC2086
./bin/geni-am-bench "${common[@]}" --scenarios listresources,listresources-compressed,allocate-delete,describe-status \
  --request docs/examples/request-one-container.xml --pgbench "$db" $ARGS --baseline bench.json --json bench-10k.json
stop_aggregate
