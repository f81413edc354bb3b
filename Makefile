# The two commands of the README. Both set up what they need first (scripts/bootstrap.sh is idempotent).
.PHONY: setup demo test lint

setup:
	./scripts/bootstrap.sh

demo: setup
	.venv/bin/jiapei demo $(ARGS)

test: setup
	.venv/bin/pytest -q $(ARGS)

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports
