"""The one exception type users see from npgpt: a one-line message naming the problem and the fix."""


class NpgptError(ValueError):
    """Bad input or state. The message is one line: what is wrong, then what to do about it."""
