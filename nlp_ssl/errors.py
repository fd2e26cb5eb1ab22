"""Errors that speak the user's language: each names the file, field or value at fault."""


class NlpSslError(ValueError):
    """Base class: bad input that is caught before training starts."""


class ConfigError(NlpSslError):
    """A config file or override that does not fit the recipe's dataclass."""


class DataError(NlpSslError):
    """A data file, column or example that cannot be used."""
