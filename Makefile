# The two commands of the README. Both set up what they need first (scripts/bootstrap.sh is idempotent).
.PHONY: setup demo test lint

setup:
	./scripts/bootstrap.sh

demo: setup
	.venv/bin/jiapei demo $(ARGS)

test:
	JIAPEI_BROWSER=1 ./scripts/bootstrap.sh
	.venv/bin/pytest -q $(ARGS)

lint: setup
	.venv/bin/ruff check . && .venv/bin/ruff format --check . && .venv/bin/lint-imports
