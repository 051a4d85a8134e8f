"""Adapters: the ports' implementations, one package per runtime."""
