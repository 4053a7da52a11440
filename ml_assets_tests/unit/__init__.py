"""Quick tests: no server, no Ray; `make test-unit` runs them alone."""
