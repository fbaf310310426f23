"""Pluggable sans-I/O consensus engines, their application boundary and a simulator."""
