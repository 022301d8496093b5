"""Errors raised while reading what crossed a process boundary."""


class WireError(ValueError):
    """Base for malformed messages and payloads."""


class BadTensorPayload(WireError):
    """A tensor payload that is not valid safetensors or not of the agreed shape."""


class BadAnswer(WireError):
    """A site's answer that does not fit its task: a count above what the site declared, a
    vector of another length, a statistic that cannot be pooled."""
