"""Schedulers that misbehave on purpose, loaded by dotted path in the server tests."""
