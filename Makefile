# The two commands a new machine needs: `make serve` and `make test`. Everything else is set-up they call.
PYTHON_SYS ?= python3.11
VENV       ?= .venv
PY         := $(VENV)/bin/python
PIP        := $(PY) -m pip
HOST       ?= 127.0.0.1
PORT       ?= 8000
STUDIES    ?= datastore
PYTEST_ARGS ?=

.PHONY: serve test install test-idp datastore pacs clean-datastore bench-adapt bench-speed bench-al bench-site bench-interactive fl-sim \
	bench-federated

# Stamp files make the install idempotent: re-run only when the pins or the extras change.
$(VENV)/.installed: pyproject.toml constraints.txt
	@command -v $(PYTHON_SYS) >/dev/null || { echo "error: $(PYTHON_SYS) not found; MedFMAdapt needs Python 3.11"; exit 1; }
	test -x $(PY) || $(PYTHON_SYS) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, alone: with it fixed, the resolver never swaps it for another build.
	$(PIP) install -q -c constraints.txt torch torchvision
	$(PIP) install -q -c constraints.txt -e ".[server,test,slicer-test]"
	touch $@

# The test identity provider (npm oidc-provider, exact versions from its package-lock.json) for the auth tests:
# `make test` needs it, a server does not (a site points the server at its own provider, docs/auth.md).
IDP := Testing/idp
$(IDP)/node_modules/.installed: $(IDP)/package.json $(IDP)/package-lock.json
	@command -v npm >/dev/null || { echo "error: npm (Node.js 20+) not found; the auth tests run a local OpenID Connect provider with it"; exit 1; }
	cd $(IDP) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

install: $(VENV)/.installed

test-idp: $(IDP)/node_modules/.installed

# The sample datastore is built from registry packages only (pyradiomics sdist, nilearn); see monailabel_app/scripts.
# STUDIES may instead be a PACS's DICOMweb URL (make serve STUDIES=http://127.0.0.1:8042/dicom-web): then there is
# no local datastore to build.
ifeq ($(findstring ://,$(STUDIES)),)
$(STUDIES)/.complete: $(VENV)/.installed
	$(PY) monailabel_app/scripts/build_sample_datastore.py --out $(STUDIES)

datastore: $(STUDIES)/.complete
SERVE_DATA := datastore
else
datastore:
	@echo "STUDIES is a DICOMweb URL ($(STUDIES)): images come from that PACS, there is no datastore folder to build"
endif

serve: install $(SERVE_DATA)
	$(PY) monailabel_app/scripts/serve.py --studies $(STUDIES) --host $(HOST) --port $(PORT)

# A local Orthanc PACS (Debian's packages, unprivileged, 127.0.0.1:8042) holding the sample series as DICOM, to try
# `make serve STUDIES=http://127.0.0.1:8042/dicom-web` before pointing the server at the site's PACS.
pacs: install datastore
	$(PY) monailabel_app/scripts/local_orthanc.py --port 8042 --studies $(STUDIES)

test: install test-idp
	$(PY) -m ruff check .
	$(PY) -m pytest $(PYTEST_ARGS)

clean-datastore:
	rm -rf $(STUDIES)

# Benchmarks (not part of `make test`): each writes JSON, a markdown table and a PNG to benchmarks/results/.
# BENCH_ARGS passes options through, e.g. `make bench-speed BENCH_ARGS=--smoke`.
BENCH_ARGS ?=

bench-adapt: install datastore
	$(PY) benchmarks/adaptation.py --studies $(STUDIES) $(BENCH_ARGS)

bench-site: install datastore
	$(PY) benchmarks/site.py --studies $(STUDIES) $(BENCH_ARGS)

# Box then 5 clicks per structure, as the CVPR 2025 interactive 3D challenge scores it, through the product's
# interactive path (issue 24); BENCH_ARGS="--cases all" adds the TotalSegmentator organs (silver labels).
bench-interactive: install datastore
	$(PY) benchmarks/interactive.py --studies $(STUDIES) $(BENCH_ARGS)

bench-speed: install datastore
	$(PY) benchmarks/speed.py --studies $(STUDIES) $(BENCH_ARGS)

bench-al: install datastore
	$(PY) benchmarks/active_learning.py --studies $(STUDIES) $(BENCH_ARGS)

# Federated adaptation on NVFlare's simulator, offline on 127.0.0.1: three sites cut from the sample datastore.
# fl-sim prints each round and each site's guard decision; bench-federated adds local-only and pooled baselines.
fl-sim: install datastore
	$(PY) benchmarks/federated.py --studies $(STUDIES) --size sim $(BENCH_ARGS)

bench-federated: install datastore
	$(PY) benchmarks/federated.py --studies $(STUDIES) --size cpu $(BENCH_ARGS)
