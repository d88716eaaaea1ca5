class DataError(Exception):
    """Bad input: the message names the file and the item, on one line."""
