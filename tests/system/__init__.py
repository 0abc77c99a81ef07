"""Cross-cutting tests: package boundaries, the docs' commands, train → export → serve and the deployment loop."""
