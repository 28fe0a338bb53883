"""Request dependencies: the application context, the caller's API key, and running services."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request

from perkflow.auth.service import KeyVerifier, Principal, split_key
from perkflow.core import transactions
from perkflow.core.context import AppContext
from perkflow.core.errors import Unauthorized
from perkflow.core.uow import UnitOfWork

T = TypeVar("T")


def get_ctx(request: Request) -> AppContext:
    ctx: AppContext = request.app.state.ctx
    return ctx


Ctx = Annotated[AppContext, Depends(get_ctx)]


def authenticate(request: Request) -> Principal:
    """The caller, from `Authorization: Bearer <key id>.<secret>` or X-App-Id / X-App-Token."""
    headers = request.headers
    return authenticate_with(
        get_ctx(request),
        request.app.state.key_verifier,
        headers.get("authorization"),
        headers.get("x-app-id"),
        headers.get("x-app-token"),
    )


def authenticate_with(
    ctx: AppContext,
    verifier: KeyVerifier,
    authorization: str | None,
    app_id: str | None,
    app_token: str | None,
) -> Principal:
    """`authenticate` from the header values themselves (for handlers that run without a Request)."""
    if authorization:
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("use Authorization: Bearer <key id>.<secret>", code="unauthorized")
        key_id, secret = split_key(value)
    elif app_id and app_token:
        key_id, secret = app_id, app_token
    else:
        raise Unauthorized(
            "an API key is required: send Authorization: Bearer <key id>.<secret>", code="unauthorized"
        )
    return verifier.verify(ctx.uow, key_id, secret)


def require(scope: str) -> Any:
    """A dependency that authenticates the caller and checks one scope."""

    def dependency(request: Request) -> Principal:
        principal = authenticate(request)
        principal.require(scope)
        return principal

    return Depends(dependency)


def write(ctx: AppContext, work: Callable[[UnitOfWork], T]) -> T:
    return transactions.run(ctx, work, write=True)


def read(ctx: AppContext, work: Callable[[UnitOfWork], T]) -> T:
    return transactions.run(ctx, work, write=False)
