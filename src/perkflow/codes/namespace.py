"""The one namespace of codes: a reward coupon and a promotion voucher never share a code.

Each table keeps its own codes unique with a constraint; these look-ups keep the two apart, so a
code a customer types always means one thing (validation, redemption and claims look in one place).
Each look-up is made by a writer that is about to insert into its own table, so it first takes the
namespace lock (`Database.hold_code_namespace`) that keeps a concurrent writer of the other table
from checking before this transaction commits.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Column, exists, select

from perkflow.core.uow import UnitOfWork


def _taken(uow: UnitOfWork, column: Column[str], codes: Sequence[str]) -> set[str]:
    if not codes:
        return set()
    stmt = select(column).where(uow.db.in_list(column, "codes"))
    return set(uow.conn.execute(stmt, {"codes": uow.db.list_param(list(codes))}).scalars())


def coupon_codes_among(uow: UnitOfWork, codes: Sequence[str]) -> set[str]:
    """Which of `codes` are reward coupons (cheap when no reward uses coupons at all); for a writer
    of vouchers, which then holds the shared namespace lock until it commits."""
    from perkflow.rewards.tables import coupons

    uow.db.hold_code_namespace(uow.conn, exclusive=False)
    if not codes or not uow.conn.execute(select(exists().where(coupons.c.id.isnot(None)))).scalar():
        return set()
    return _taken(uow, coupons.c.code, codes)


def voucher_codes_among(uow: UnitOfWork, codes: Sequence[str]) -> set[str]:
    """Which of `codes` are promotion vouchers, deleted ones included (their codes stay reserved);
    for a writer of coupons, which then holds the namespace lock alone until it commits."""
    from perkflow.promotions.tables import vouchers

    uow.db.hold_code_namespace(uow.conn, exclusive=True)
    return _taken(uow, vouchers.c.code, codes)
