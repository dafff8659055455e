# geniam: a GENI Aggregate Manager (AM API v3).
#   make run    start the aggregate on an embedded default (PostgreSQL, PKI and inventory under ./var)
#   make test   every test, PostgreSQL and Docker included, plus a short fuzzing pass
#   make bench  benchmarks (go test -bench)
#   make fuzz   every fuzz target for FUZZTIME each

GO        ?= go
FUZZTIME  ?= 60s
SHORTFUZZ ?= 4s
PKGS      := ./...

.PHONY: all build run test vet unit fuzz-short fuzz bench clean

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

fuzz:
	@set -e; for pkg in $$($(GO) list $(PKGS)); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f ($(FUZZTIME))"; \
	    $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg >/tmp/geniam-fuzz.log 2>&1 || { cat /tmp/geniam-fuzz.log; exit 1; }; \
	  done; \
	done

test: vet unit fuzz-short

bench:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 30m $(PKGS)

clean:
	rm -rf bin
