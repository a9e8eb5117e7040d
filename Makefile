# The project's vocabulary. `make run` and `make test` are all a newcomer needs.
GO          ?= go
DATA        ?= data/mail
FUZZTIME    ?= 30s
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: run test test-under-load e2e bench bench-quick bench-scale lint fuzz chaos bank-crash bench-cluster

## run: the flagship example, a mail system, on $(DATA)
run:
	$(GO) run ./examples/mail -data $(DATA)

## test: vet (the benchmark harness too), then the whole suite under the race detector
test:
	$(GO) vet ./...
	cd bench && $(GO) vet ./...
	$(GO) test -race -count=1 ./...

## test-under-load: make test on a loaded machine (2 CPU hogs per core and a process writing unsynced data to the same disk), as a shared CI host would be
test-under-load:
	$(CURDIR)/.ci/under-load.sh $(MAKE) test

## e2e: a real Prometheus scrapes the mail example, and headless Chromium renders its inspection page (installs Debian's prometheus and chromium if missing; not part of test)
e2e:
	GO=$(GO) $(CURDIR)/.ci/e2e-prometheus.sh
	GO=$(GO) $(CURDIR)/.ci/e2e-browser.sh

## bench: the Go micro-benchmarks, then the comparison harness (bench/) against every system, PostgreSQL included
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...
	@DSN="$$($(CURDIR)/bench/postgres.sh start)" || exit 1; \
	trap '$(CURDIR)/bench/postgres.sh stop' EXIT; trap 'exit 130' INT TERM; \
	cd bench && $(GO) run . -postgres "$$DSN"

## bench-quick: the comparison harness, every system but PostgreSQL, in under a minute
bench-quick:
	cd bench && $(GO) run . -quick

## bench-scale: the scale benchmark: 100,000 parts on disk, at most 2,000 open, zipfian and uniform streams, and the zipfian one over as many parts as the descriptor limit keeps open (about 4 minutes on 2 cores)
bench-scale:
	cd bench && $(GO) run . scale

## bench-cluster: requests served by another node (over protoactor-go's remote) against the same requests served locally, p50/p99 and msgs/s
bench-cluster:
	$(GO) test -run '^$$' -bench CrossNode -benchtime 1x ./cluster/

## bank-crash: the bank example killed with SIGKILL and restarted 100 times under transfers, then audited (the default test run does 8 cycles)
bank-crash:
	$(GO) test -count=1 -run '^TestCrashKill9$$' -v ./examples/bank -bank.cycles=100

## lint: gofmt, vet and staticcheck
lint:
	@out="$$(gofmt -l $$(git ls-files '*.go'))"; if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

## fuzz: each fuzz target for $(FUZZTIME)
fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzParsePath$$' -fuzztime $(FUZZTIME) ./actors/
	$(GO) test -run '^$$' -fuzz '^FuzzSegmentEncoding$$' -fuzztime $(FUZZTIME) ./actors/
	$(GO) test -run '^$$' -fuzz '^FuzzResolve$$' -fuzztime $(FUZZTIME) ./actors/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeMessage$$' -fuzztime $(FUZZTIME) ./actors/
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeFrame$$' -fuzztime $(FUZZTIME) ./cluster/
	$(GO) test -run '^$$' -fuzz '^FuzzCommand$$' -fuzztime $(FUZZTIME) ./cmd/fractal/

## chaos: the reliability suite in full, figures in docs/RELIABILITY.md: 200 kill -9 cycles, disk full (mounts a tmpfs: run as root), file faults, a flood, 10,000 parts under ulimit -n 256, unknown messages, every fuzz target, read-only commands, TLS, kill -9 during moves, etcd members lost, a partition between nodes (about 20 minutes on 2 cores)
chaos:
	GO=$(GO) FUZZTIME=$(FUZZTIME) $(CURDIR)/.ci/chaos.sh
