"""Tests of serve/: the batcher, runtime, registry, core, the gRPC server and its clients."""
