# The project's vocabulary. `make run` and `make test` are all a newcomer needs.
GO          ?= go
DATA        ?= data/mail
FUZZTIME    ?= 30s
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: run test bench lint fuzz

## run: the flagship example, a mail system, on $(DATA)
run:
	$(GO) run ./examples/mail -data $(DATA)

## test: vet, then the whole suite under the race detector
test:
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...

## bench: every benchmark, with allocations
bench:
	$(GO) test -run '^$$' -bench . -benchmem ./...

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
