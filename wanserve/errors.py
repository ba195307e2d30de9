"""Domain errors. Each carries the DashScope error code it surfaces as.

The code travels two ways: as an HTTP error body on a request that fails at once
(the HTTP status is chosen in one place, `wanserve.api.errors`), or as `output.code`
of a task that ends FAILED.

    WanserveError                      code (default)
    ├── InvalidParameter               InvalidParameter
    │   ├── EmptyModel                 BadRequest.EmptyModel
    │   ├── EmptyInput                 BadRequest.EmptyInput
    │   ├── InvalidURL                 InvalidURL
    │   └── UnsupportedMediaType       InvalidParameter  (HTTP 415: body type or encoding)
    ├── InvalidApiKey                  InvalidApiKey
    ├── AccessDenied                   AccessDenied
    ├── UnsupportedOperation           UnsupportedOperation
    ├── RequestTooLarge                BadRequest.TooLarge
    ├── NotFound                       NotFound
    ├── Throttled                      Throttling / Throttling.RateQuota /
    │                                  Throttling.AuthFailures (may carry retry_after)
    ├── NotReady                       ServiceUnavailable  (GET /ready: what is not ready)
    └── InternalError                  InternalError
        ├── ModelUnavailable           InternalError.Algo  (weights cannot be loaded)
        └── storage.base.StorageError  InternalError.Storage  (full, unreachable, read-only;
                                       defined with the `Storage` seam that raises them)
"""

from __future__ import annotations


class WanserveError(Exception):
    """Base of every error this service raises on purpose."""

    code: str = "InternalError"

    def __init__(self, message: str, *, code: str | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        # The request field at fault, when the raiser knows it (OpenAI's error `param`).
        self.field = field


class InvalidParameter(WanserveError):
    """The request cannot be honoured as written; the message names the field."""

    code = "InvalidParameter"


class EmptyModel(InvalidParameter):
    code = "BadRequest.EmptyModel"


class EmptyInput(InvalidParameter):
    code = "BadRequest.EmptyInput"


class InvalidURL(InvalidParameter):
    code = "InvalidURL"


class UnsupportedMediaType(InvalidParameter):
    """The body is not in a media type or content coding the endpoint reads."""


class InvalidApiKey(WanserveError):
    code = "InvalidApiKey"


class AccessDenied(WanserveError):
    code = "AccessDenied"


class UnsupportedOperation(WanserveError):
    code = "UnsupportedOperation"


class RequestTooLarge(WanserveError):
    code = "BadRequest.TooLarge"


class NotFound(WanserveError):
    code = "NotFound"


class Throttled(WanserveError):
    code = "Throttling"

    def __init__(
        self, message: str, *, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message, code=code)
        # Seconds after which a retry can succeed, when known (sent as `Retry-After`).
        self.retry_after = retry_after


class NotReady(WanserveError):
    """The process cannot serve yet (its store, storage or models); the message lists why."""

    code = "ServiceUnavailable"


class InternalError(WanserveError):
    code = "InternalError"


class ModelUnavailable(InternalError):
    """The model's weights could not be found or loaded; the message says how to configure them."""

    code = "InternalError.Algo"
