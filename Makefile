# Thin wrappers around dev.py, which needs only Python and pip.
.PHONY: lab test notebooks bench voila composites
lab:
	python3 dev.py lab
test:
	python3 dev.py test
notebooks:
	python3 dev.py notebooks
bench:
	python3 dev.py bench
voila:
	python3 dev.py voila
composites:
	python3 scripts/make_composites.py
