# Outpost — make targets. `make` alone lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
# Build tags that let the Podman bindings build without cgo libraries.
TAGS    := remote exclude_graphdriver_btrfs btrfs_noversion exclude_graphdriver_devicemapper containers_image_openpgp
LDFLAGS := -s -w -X github.com/outpostdev/outpost/appliance/cli.Version=$(VERSION)
BIN     := bin/outpost

# Rootless Podman runs as an unprivileged user; as root, tests and the demo
# run as this user (created by scripts/setup-host.sh).
TEST_USER ?= outpost-test
# Where binaries are copied so the unprivileged user can run them.
RUN_DIR   ?= /tmp/outpost-run
IS_ROOT   := $(shell [ "$$(id -u)" = 0 ] && echo yes)
ifeq ($(IS_ROOT),yes)
AS_USER = runuser -u $(TEST_USER) -- env HOME=/home/$(TEST_USER) XDG_RUNTIME_DIR=/run/user/$$(id -u $(TEST_USER)) PATH=/usr/local/bin:/usr/bin:/bin
else
AS_USER = env
endif
E2E_TIMEOUT ?= 25m

.PHONY: help
help: ## list targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

.PHONY: setup
setup: ## install Podman and host settings (root; idempotent)
ifeq ($(IS_ROOT),yes)
	@OUTPOST_TEST_USER=$(TEST_USER) sh scripts/setup-host.sh
else
	@echo "setup: not root; assuming rootless Podman is already set up (run 'sudo make setup' otherwise)"
endif

.PHONY: build
build: ## build the static outpost binary into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -tags "$(TAGS)" -ldflags "$(LDFLAGS)" -o $(BIN) ./cmd/outpost

.PHONY: stage
stage: build
	@mkdir -p bin
	CGO_ENABLED=0 $(GO) test -c -tags "$(TAGS) e2e" -o bin/e2e.test ./e2e
	CGO_ENABLED=0 $(GO) test -c -tags "$(TAGS) podmane2e" -o bin/podman.test ./appliance/engine/podman
	@rm -rf $(RUN_DIR) && install -d -m 0755 $(RUN_DIR)
	install -m 0755 $(BIN) bin/e2e.test bin/podman.test $(RUN_DIR)/

.PHONY: unit
unit: ## unit tests (no Podman needed)
	CGO_ENABLED=0 $(GO) test -tags "$(TAGS)" -count=1 ./...

.PHONY: e2e-postgres
e2e-postgres: setup ## real PostgreSQL image built offline from Debian packages, for the backup e2e tests (root; cached)
ifeq ($(IS_ROOT),yes)
	@OUTPOST_TEST_USER=$(TEST_USER) sh scripts/e2e-postgres-image.sh
else
	@podman image exists localhost/outpost-e2e-postgres:15 || echo "e2e-postgres: not root; build the image with 'sudo make e2e-postgres' (the backup e2e tests need it)"
endif

.PHONY: e2e-clean
e2e-clean: setup ## remove every container the test user's Podman has (left by interrupted runs) so its rootless network starts fresh
	$(AS_USER) sh -c 'cd /; podman ps -aq | xargs -r podman rm -f >/dev/null; podman pod rm -af >/dev/null 2>&1 || true'

.PHONY: e2e
e2e: setup e2e-clean e2e-postgres stage ## end-to-end tests against real rootless Podman (the test user's containers are removed first)
	cd $(RUN_DIR) && $(AS_USER) ./podman.test -test.run TestPodmanE2E -test.v -test.count=1 -test.timeout 10m
	cd $(RUN_DIR) && $(AS_USER) OUTPOST_BIN=$(RUN_DIR)/outpost ./e2e.test -test.v -test.count=1 -test.timeout $(E2E_TIMEOUT)

.PHONY: systemd-e2e
systemd-e2e: setup build ## `outpost install` under a real systemd (root: boots systemd in a rootful Podman container)
ifeq ($(IS_ROOT),yes)
	@command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }
	@install -d -m 0755 $(RUN_DIR)/systemd && install -m 0755 $(BIN) install.sh $(RUN_DIR)/systemd/
	CGO_ENABLED=0 $(GO) test -c -tags "$(TAGS) systemde2e" -o $(RUN_DIR)/systemd/systemd.test ./e2e
	cd $(RUN_DIR)/systemd && OUTPOST_BIN=$(RUN_DIR)/systemd/outpost OUTPOST_INSTALL_SH=$(RUN_DIR)/systemd/install.sh OUTPOST_TEST_USER=$(TEST_USER) ./systemd.test -test.v -test.count=1 -test.timeout 20m
else
	@echo "systemd-e2e: skipped: needs root (it boots systemd in a rootful Podman container)"
endif

.PHONY: test
test: setup vet unit e2e systemd-e2e ## everything CI runs: setup, vet, unit and end-to-end tests (incl. under systemd)

.PHONY: vet
vet: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	CGO_ENABLED=0 $(GO) vet -tags "$(TAGS)" ./...
	CGO_ENABLED=0 $(GO) vet -tags "$(TAGS) e2e podmane2e" ./e2e ./appliance/engine/podman
	CGO_ENABLED=0 $(GO) vet -tags "$(TAGS) systemde2e" ./e2e
	sh -n install.sh

.PHONY: lint
lint: vet ## alias of vet

.PHONY: demo
demo: setup build ## build and bring up the embedded demo appliance, served by the daemon's embedded proxy
	@rm -rf $(RUN_DIR) && install -d -m 0755 $(RUN_DIR) && install -m 0755 $(BIN) scripts/demo-daemon.sh $(RUN_DIR)/
	cd $(RUN_DIR) && $(AS_USER) ./outpost up
	cd $(RUN_DIR) && $(AS_USER) ./demo-daemon.sh
	@echo
	@echo "The demo appliance is up (running rootless as $(if $(IS_ROOT),$(TEST_USER),$$USER)), behind the embedded proxy:"
	@echo "  web front:  https://localhost:18443/        (trust the local CA: curl --cacert ~$(if $(IS_ROOT),$(TEST_USER),)/.local/state/outpost/proxy/ca-root.crt)"
	@echo "  API:        https://localhost:18443/api/hello"
	@echo "  routes:     cd $(RUN_DIR) && $(AS_USER) ./outpost proxy routes"
	@echo "  direct:     http://127.0.0.1:18000/ (the web front's own port)"
	@echo "  status:     cd $(RUN_DIR) && $(AS_USER) ./outpost status"
	@echo "  logs:       cd $(RUN_DIR) && $(AS_USER) ./outpost logs api"
	@echo "  stop:       cd $(RUN_DIR) && $(AS_USER) ./outpost down   (volumes are kept; the daemon keeps running"
	@echo "              until SIGTERM: kill \$$(cat /run/user/\$$(id -u $(if $(IS_ROOT),$(TEST_USER),))/outpost-demo-run.pid))"

.PHONY: bench
bench: setup build ## start-up benchmark vs podman-compose (see docs/benchmarks.md)
ifeq ($(IS_ROOT),yes)
	@command -v podman-compose >/dev/null 2>&1 || { echo "bench: installing podman-compose"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman-compose >/dev/null; }
else
	@command -v podman-compose >/dev/null 2>&1 || { echo "bench: podman-compose is missing (sudo apt-get install podman-compose)"; exit 1; }
endif
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/bench-startup ./bench/startup
	@install -d -m 0755 $(RUN_DIR) && rm -rf $(RUN_DIR)/bench && install -d -m 0755 $(RUN_DIR)/bench
	install -m 0755 $(BIN) bin/bench-startup $(RUN_DIR)/bench/
	install -m 0644 bench/startup/compose.yml $(RUN_DIR)/bench/
	cd $(RUN_DIR)/bench && $(AS_USER) ./outpost demo-image
	cd $(RUN_DIR)/bench && $(AS_USER) ./bench-startup -trace $(BENCH_FLAGS)

.PHONY: bench-proxy
bench-proxy: setup build ## proxy benchmark: embedded Caddy vs standalone caddy vs direct, wrk (see docs/benchmarks.md)
ifeq ($(IS_ROOT),yes)
	@command -v wrk >/dev/null 2>&1 && [ -x /usr/bin/caddy ] || { echo "bench-proxy: installing wrk and caddy (Debian packages)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wrk caddy >/dev/null; }
else
	@command -v wrk >/dev/null 2>&1 && [ -x /usr/bin/caddy ] || { echo "bench-proxy: wrk or /usr/bin/caddy is missing (sudo apt-get install wrk caddy)"; exit 1; }
endif
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/bench-proxy ./bench/proxy
	@install -d -m 0755 $(RUN_DIR) && rm -rf $(RUN_DIR)/bench-proxy && install -d -m 0755 $(RUN_DIR)/bench-proxy
	install -m 0755 $(BIN) bin/bench-proxy $(RUN_DIR)/bench-proxy/
	cd $(RUN_DIR)/bench-proxy && $(AS_USER) ./outpost demo-image
	cd $(RUN_DIR)/bench-proxy && $(AS_USER) ./bench-proxy -outpost ./outpost -markdown $(BENCH_PROXY_FLAGS)

.PHONY: bench-upgrade
bench-upgrade: setup build ## upgrade under load: outpost upgrade vs podman-compose up -d --force-recreate (direct, behind caddy); failed requests, latency (see docs/benchmarks.md)
ifeq ($(IS_ROOT),yes)
	@command -v podman-compose >/dev/null 2>&1 && [ -x /usr/bin/caddy ] || { echo "bench-upgrade: installing podman-compose and caddy (Debian packages)"; apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends podman-compose caddy >/dev/null; }
else
	@command -v podman-compose >/dev/null 2>&1 && [ -x /usr/bin/caddy ] || { echo "bench-upgrade: podman-compose or /usr/bin/caddy is missing (sudo apt-get install podman-compose caddy)"; exit 1; }
endif
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/bench-upgrade ./bench/upgrade
	@install -d -m 0755 $(RUN_DIR) && rm -rf $(RUN_DIR)/bench-upgrade && install -d -m 0755 $(RUN_DIR)/bench-upgrade
	install -m 0755 $(BIN) bin/bench-upgrade $(RUN_DIR)/bench-upgrade/
ifeq ($(IS_ROOT),yes)
	@chown $(TEST_USER) $(RUN_DIR)/bench-upgrade
endif
	cd $(RUN_DIR)/bench-upgrade && $(AS_USER) ./outpost demo-image
	cd $(RUN_DIR)/bench-upgrade && $(AS_USER) ./bench-upgrade -outpost ./outpost -dir work -markdown $(BENCH_UPGRADE_FLAGS)

.PHONY: bench-bundle
bench-bundle: setup build ## air-gap load benchmark: outpost bundle load vs podman load, 640 MiB of images (see docs/benchmarks.md)
	CGO_ENABLED=0 $(GO) build -trimpath -tags "$(TAGS)" -o bin/bench-bundle ./bench/bundle
	@install -d -m 0755 $(RUN_DIR) && rm -rf $(RUN_DIR)/bench-bundle && install -d -m 0755 $(RUN_DIR)/bench-bundle
	install -m 0755 $(BIN) bin/bench-bundle $(RUN_DIR)/bench-bundle/
ifeq ($(IS_ROOT),yes)
	@chown $(TEST_USER) $(RUN_DIR)/bench-bundle
endif
	cd $(RUN_DIR)/bench-bundle && $(AS_USER) ./bench-bundle -outpost ./outpost -dir work $(BENCH_BUNDLE_FLAGS)

.PHONY: clean
clean: ## remove build outputs
	rm -rf bin $(RUN_DIR)
