"""Errors of the secure aggregation protocol. Every message says what went wrong and what the
site admin or researcher can do; none contains a secret."""


class SecAggError(Exception):
    """Base for every secure aggregation failure: the round cannot go on as it is."""


class EncodingError(SecAggError, ValueError):
    """A value cannot be encoded exactly, or its sum over the round's sites could wrap."""


class ProtocolError(SecAggError):
    """A message or call that breaks the protocol: out of order, for another round, or
    inconsistent with what this party saw earlier."""


class AuthenticationError(ProtocolError):
    """A signature, identity key or encrypted share does not verify: a key was substituted,
    a message forged or tampered with, or it was made for another round."""


class ThresholdError(SecAggError):
    """Too few sites, shares or survivors for the round's threshold or a site's policy."""


class ReconstructionError(SecAggError):
    """Shares that do not agree on one secret: at least one share is wrong."""


class SumMismatch(SecAggError):
    """The unmasked sum fails its ``sites`` check: the masks did not cancel."""


class IdentityError(SecAggError):
    """An identity key file that cannot be created, read or trusted."""
