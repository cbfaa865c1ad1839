"""The error type for problems a user can fix (bad config, bad file, bad size)."""


class UserError(Exception):
    """A problem with the user's input, reported as one line and exit code 2 by the scripts."""
