# geniam: a GENI Aggregate Manager (AM API v3).
#   make run    start the aggregate on an embedded default (PostgreSQL, PKI and inventory under ./var)
#   make test   every test, PostgreSQL and Docker included, plus a short fuzzing pass
#   make bench  benchmarks (go test -bench)
#   make fuzz   every fuzz target for FUZZTIME each
#   make lint   staticcheck and unreachable-code detection (tools fetched from the Go module proxy)
#   make race   the race detector over the packages with concurrent code and fast tests
#   make soak   the load and fault soak, long form (SOAK_DURATION, SOAK_CLIENTS)

GO        ?= go
FUZZTIME  ?= 60s
SHORTFUZZ ?= 4s
PKGS      := ./...

.PHONY: all build run test vet unit fuzz-short fuzz lint race bench soak clean

all: build

build:
	$(GO) build -o bin/ ./cmd/...

run: build
	./bin/geni-am dev --var ./var

vet:
	$(GO) vet $(PKGS)
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }

unit:
	$(GO) test -count=1 -timeout 25m $(PKGS)

# Each fuzz target runs briefly; `make fuzz` runs them for FUZZTIME.
fuzz-short:
	@$(MAKE) --no-print-directory fuzz FUZZTIME=$(SHORTFUZZ)

# Go 1.26's fuzz coordinator can fail a target with a bare "context deadline
# exceeded" when -fuzztime ends while a worker is busy (go.dev/issue/75804,
# fixed in Go 1.27). When no failing input was written either (the worker may
# have found one and been cut off while minimizing it: then it is in
# testdata/fuzz and fails the target here), the target runs once more; the
# same ending twice fails it.
fuzz:
	@set -e; log=$$(mktemp); trap 'rm -f $$log' EXIT; \
	for pkg in $$($(GO) list $(PKGS)); do \
	  corpus=$$($(GO) list -f '{{.Dir}}' $$pkg)/testdata/fuzz; \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    for try in 1 2; do \
	      before=$$(ls $$corpus/$$f 2>/dev/null || true); \
	      if $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >$$log 2>&1; then break; fi; \
	      if [ "$$(ls $$corpus/$$f 2>/dev/null || true)" != "$$before" ]; then \
	        cat $$log; echo "a failing input is in $$corpus/$$f: go test -run '$$f/' $$pkg replays it"; exit 1; \
	      fi; \
	      if [ $$try = 1 ] && grep -A1 -- "--- FAIL: $$f " $$log | tail -n 1 | grep -qx '    context deadline exceeded'; then \
	        echo "  stopped by the fuzz coordinator's deadline race (go.dev/issue/75804), no input failed: once more"; continue; \
	      fi; \
	      cat $$log; exit 1; \
	    done; \
	  done; \
	done

test: vet unit fuzz-short

# make lint: staticcheck, and deadcode -test, which names every function that
# no main and no test reaches. The versions are pinned; go run fetches them
# from the module proxy once and caches the build.
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
DEADCODE    ?= golang.org/x/tools/cmd/deadcode@v0.53.0

lint:
	$(GO) run $(STATICCHECK) $(PKGS)
	@out="$$($(GO) run $(DEADCODE) -test $(PKGS))"; \
	  if [ -n "$$out" ]; then echo "unreachable code (remove it, or use it):"; echo "$$out"; exit 1; fi

# make race: the race detector on the packages whose concurrency it can see
# quickly (the aggregate, the codec, credentials and its caches, the store's
# concurrent transactions). The agent and provisioning suites run real
# containers and take minutes without it; `go test -race ./...` covers them
# when there is time.
RACE_PKGS ?= ./am ./am/xmlrpc ./am/metrics ./credentials/... ./rspec ./store

race:
	$(GO) test -race -count=1 -timeout 15m $(RACE_PKGS)

# make bench: the Go benchmarks (BenchmarkScale: 10,000 nodes; BenchmarkTutorialBurst:
# 40 clients x 5 containers against docker run), then geni-am-bench over real TLS
# against an aggregate of its own (var/bench: private PostgreSQL, dev PKI, a
# 1,000-node inventory, CPU profile in bench-cpu.pprof) and one of 10,000 nodes with
# 50,000 live slivers (var/bench-10k), with the PostgreSQL ceiling (pgbench -N)
# measured in the same run.
BENCH_VAR ?= var/bench
BENCH_AM  ?= 127.0.0.1:8021
BENCH_CH  ?= 127.0.0.1:8020
BENCH_ARGS ?= --duration 10s --count 2000 --clients 1,8,32

bench: build
	$(GO) test -run '^$$' -bench . -benchmem -timeout 30m $(PKGS) | tee bench-go.txt
	BENCH_VAR=$(BENCH_VAR) BENCH_AM=$(BENCH_AM) BENCH_CH=$(BENCH_CH) BENCH_ARGS="$(BENCH_ARGS)" \
	  ./cmd/geni-am-bench/run-bench.sh

# make soak: mixed AM API traffic from many clients against two aggregate
# processes on one private PostgreSQL, which is restarted while the
# aggregates are SIGKILLed and restarted in turn; then the database must be
# consistent. go test runs a one-minute short form of the same test.
# Then the agent soak: slices on three geni-nodeagent processes that are
# SIGKILLed and restarted (sometimes past the retry budget) while one's disk
# fills; at the end the nodes must converge to the database (no container
# left of a deleted or expired sliver, no stray, nothing pending).
# SOAK_FLAGS=-race serves the aggregates with the race detector on.
SOAK_DURATION ?= 6m
SOAK_CLIENTS  ?= 24
SOAK_FLAGS    ?=

soak:
	GENIAM_SOAK=long GENIAM_SOAK_DURATION=$(SOAK_DURATION) GENIAM_SOAK_CLIENTS=$(SOAK_CLIENTS) \
	  $(GO) test $(SOAK_FLAGS) -count=1 -v -run '^TestSoak$$' -timeout 60m ./cmd/geni-am/
	GENIAM_SOAK=long GENIAM_SOAK_DURATION=$(SOAK_DURATION) \
	  $(GO) test $(SOAK_FLAGS) -count=1 -v -run '^TestAgentSoak$$' -timeout 60m ./am/provision/

clean:
	rm -rf bin bench.json bench.svg bench-go.txt bench-provision.json bench-10k.json bench-cpu.pprof
