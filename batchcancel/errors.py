"""The one exception tree of batchcancel.

::

    BatchcancelError            anything raised on purpose
    ├── UsageError              bad flags, settings or input: exit 2
    │   ├── ConfigError         a setting is missing or wrong
    │   └── InputError          an input cannot be read
    ├── JournalError            the journal does not belong to this run
    ├── TransportError          no usable answer: timeout, reset, unreadable
    │   └── CertificateRefused  the server's TLS certificate is not trusted
    └── ApiRefusal              the API answered and said no to the whole run
        └── CredentialsRefused  401/402/403: the token was refused: exit 3

aiohttp's exceptions are mapped into ``TransportError`` in ``api.py`` and
nowhere else.  No message in this tree ever carries the API token.
"""


class BatchcancelError(Exception):
    """Base of every error batchcancel raises on purpose."""


class UsageError(BatchcancelError):
    """Bad flags, configuration or input; the run exits 2."""


class ConfigError(UsageError):
    """A setting is missing or wrong."""


class InputError(UsageError):
    """An input cannot be read."""


class JournalError(UsageError):
    """A journal was written for another job, or is in use."""


class TransportError(BatchcancelError):
    """No usable answer came back: timeout, reset, unreadable body."""

    def __init__(self, kind: str, detail: str = "", *, sent: bool = True) -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail
        # ``sent`` is False only when the request surely never left this
        # machine (e.g. the connection could not be opened).
        self.sent = sent


class CertificateRefused(TransportError):
    """TLS verification failed: retrying cannot help, the trust store must."""

    def __init__(self, host: str, detail: str) -> None:
        super().__init__("certificate not trusted", detail, sent=False)
        self.advice = (
            f"the TLS certificate of {host} is not trusted ({detail}); if it is"
            " signed by your own CA, point SSL_CERT_FILE at that CA's bundle"
        )


class ApiRefusal(BatchcancelError):
    """The API answered and refused the whole run, not one order."""


class CredentialsRefused(ApiRefusal):
    """401, 402 or 403: the token (or the account) was refused; exit 3."""
