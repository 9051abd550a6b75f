"""The one error type model loading raises: its message is meant to be shown to the user as is."""


class ModelLoadError(RuntimeError):
    """A model or tokenizer could not be loaded; the message says why and what to do."""
