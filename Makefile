# Feedback Workbook — common verbs. Every verb bootstraps .venv when it is missing.
#   make reproduce [PROFILE=cpu]   run every notebook of a profile → reports/<profile>/index.html
#   make test                      unit tests, runner tests, notebooks under nbval (smoke)
#   make lab                       JupyterLab in notebooks/
#   make annotate TASK=t.json [STORE=s.db] [ANNOTATOR=name] [PORT=8866]  the annotation app without code (Voilà)
#   make bench-ddpo [PROFILE=cpu]  DDPO ours vs trl 0.23.1's DDPOTrainer (benchmarks/ddpo_vs_trl.py; smoke|cpu|gpu)
#   make clean-reports
# GPU users: make reproduce TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
PYTHON     ?= python3
VENV       ?= .venv
PROFILE    ?= cpu
TORCH_SPEC ?= torch==2.13.0
ONLY       ?=
BIN        := $(VENV)/bin
STAMP      := $(VENV)/.feedbacklab-installed
KERNEL     := feedbacklab

# One CPU thread per process: on a 2-core laptop a second torch thread competing with any other
# busy process slowed training ~5-10x (ENVIRONMENT.md; 01 took 365 s at 2 threads vs 69 s at 1).
export OMP_NUM_THREADS ?= 1
export PYTHONHASHSEED  := 0
export MPLBACKEND      := Agg

.PHONY: install reproduce test lab annotate bench-ddpo clean-reports

install: $(STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, from TORCH_SPEC; then everything else constrained to the torch just
# installed, so no dependency can swap it for a multi-GB CUDA build.
$(STAMP): $(BIN)/python pyproject.toml tools/install_torchvision_shim.py tools/torchvision_shim.py
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -c "import torch; print('torch==' + torch.__version__)" > $(VENV)/torch-constraint.txt
	$(BIN)/pip install --quiet -c $(VENV)/torch-constraint.txt -e ".[dev]"
	$(BIN)/python tools/install_torchvision_shim.py
	$(BIN)/python -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (feedbacklab)" >/dev/null
	@if [ -d .git ]; then $(BIN)/nbstripout --install --attributes .gitattributes; fi
	@touch $(STAMP)

reproduce: $(STAMP)
	$(BIN)/python -m feedbacklab run --profile $(PROFILE) $(if $(ONLY),--only $(ONLY))

test: $(STAMP)
	$(BIN)/python -m pytest tests
	FEEDBACKLAB_PROFILE=smoke $(BIN)/python -m feedbacklab nbval

bench-ddpo: $(STAMP)
	$(BIN)/python benchmarks/ddpo_vs_trl.py --profile $(PROFILE)

lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=notebooks

# Without TASK: a small ShapesWorld demo task under reports/annotate/demo. Paths are made absolute for Voilà.
TASK      ?=
STORE     ?=
ANNOTATOR ?= annotator
PORT      ?= 8866
annotate: $(STAMP)
	FEEDBACKLAB_TASK="$(if $(TASK),$(abspath $(TASK)))" FEEDBACKLAB_STORE="$(if $(STORE),$(abspath $(STORE)))" \
	FEEDBACKLAB_ANNOTATOR="$(ANNOTATOR)" $(BIN)/voila notebooks/apps/annotate.ipynb --port=$(PORT) --no-browser \
		--Voila.ip=127.0.0.1 --strip_sources=True

clean-reports:
	rm -rf reports/*/
