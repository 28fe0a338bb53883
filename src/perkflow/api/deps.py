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
    ctx = get_ctx(request)
    verifier: KeyVerifier = request.app.state.key_verifier
    header = request.headers.get("authorization")
    if header:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Unauthorized("use Authorization: Bearer <key id>.<secret>", code="unauthorized")
        key_id, secret = split_key(value)
    elif request.headers.get("x-app-id") and request.headers.get("x-app-token"):
        key_id, secret = request.headers["x-app-id"], request.headers["x-app-token"]
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
