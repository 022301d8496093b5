"""Errors raised while reading what crossed a process boundary."""


class WireError(ValueError):
    """Base for malformed messages and payloads."""


class BadTensorPayload(WireError):
    """A tensor payload that is not valid safetensors or not of the agreed shape."""
