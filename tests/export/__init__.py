"""Tests of export/: trained runs → parity-checked bundle versions."""
