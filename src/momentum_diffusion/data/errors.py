"""Errors raised by the data modules when a data set is missing or malformed."""


class DataNotFoundError(FileNotFoundError):
    """A data set is not where it was expected; the message is one line: the path and how to get the data."""
