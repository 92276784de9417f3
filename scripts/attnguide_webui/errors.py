"""The WebUI layer's own exception, raised on both hosts and read by script.py."""


class NotServed(ValueError):
    """A method that cannot run on this model or sampler, with the reason for the user."""
