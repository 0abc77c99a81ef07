"""Benchmarks and demonstrations that span training, export and serving (run from the repository root:
`python -m benchmarks.<name>`). They may import train/, export/ and serve/; no product package imports them."""
