"""Errors that are the user's to fix: the CLI prints them and exits 2, never with a traceback."""


class UserError(Exception):
    """A mistake in a workflow, a provider profile, a path or a command line."""

    exit_code = 2


class ServiceError(RuntimeError):
    """A server this package runs (a Triton pilot, the Envoy gateway) could not be started or kept
    running; the message says what to do."""

    exit_code = 3


class PilotError(ServiceError):
    """The Triton server could not be started or kept running."""
