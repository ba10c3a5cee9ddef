"""The run's money: what is spent, what requests in flight hold, per run and per account.

Before a model request is sent its worst case is *reserved*; when it ends the reservation is
*settled* with what the request really cost. A reservation that does not fit what is left of
the run's budget (or of its account's cap: a task's own ``budget_usd``) is refused, so spend
binds per request: the run never spends more than its budget, whatever its agents do.

Two threads use one ledger: the gateway's (reserving and settling requests) and the
scheduler's (reading it for limits, the fence and the report). Every operation is a few
additions under one lock, never held across anything else, so neither loop ever waits on
the other for longer than that.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass


@dataclass(slots=True)
class Account:
    """Money of one account (a task and its attempts), against its own cap if it has one."""

    cap: float | None = None
    spent: float = 0.0
    reserved: float = 0.0

    @property
    def left(self) -> float:
        if self.cap is None:
            return math.inf
        return max(self.cap - self.spent - self.reserved, 0.0)


class Ledger:
    """The run's budget (None: no limit), spent and reserved, and accounts by name."""

    def __init__(self, budget_usd: float | None = None) -> None:
        self._budget = budget_usd
        self._lock = threading.Lock()
        self._spent = 0.0
        self._reserved = 0.0
        self._accounts: dict[str, Account] = {}

    @property
    def budget_usd(self) -> float | None:
        return self._budget

    @property
    def spent_usd(self) -> float:
        return self._spent

    @property
    def reserved_usd(self) -> float:
        return self._reserved

    @property
    def budget_left(self) -> float:
        """What may still be reserved (infinite without a budget)."""
        if self._budget is None:
            return math.inf
        return max(self._budget - self._spent - self._reserved, 0.0)

    @property
    def budget_spent(self) -> bool:
        return self._budget is not None and self._spent >= self._budget

    def open_account(self, name: str, cap: float | None) -> None:
        """Make account ``name`` (kept if it exists: a retry of a task shares its cap)."""
        with self._lock:
            self._accounts.setdefault(name, Account(cap))

    def account(self, name: str) -> Account | None:
        return self._accounts.get(name)

    def room(self, account: str | None = None) -> float:
        """What a reservation may hold now: the run's and the account's left, the smaller."""
        acct = self._accounts.get(account) if account is not None else None
        return min(self.budget_left, acct.left if acct is not None else math.inf)

    def reserve(self, amount: float, *, account: str | None = None) -> bool:
        """Hold ``amount`` for a request about to be sent; False means do not send it."""
        with self._lock:
            acct = self._accounts.get(account) if account is not None else None
            if amount > self.budget_left or (acct is not None and amount > acct.left):
                return False
            self._reserved += amount
            if acct is not None:
                acct.reserved += amount
            return True

    def settle(self, reserved: float, actual: float, *, account: str | None = None) -> None:
        """Replace a reservation by what the request really cost (``reserved`` 0: a charge)."""
        with self._lock:
            self._reserved = max(self._reserved - reserved, 0.0)
            self._spent += actual
            acct = self._accounts.get(account) if account is not None else None
            if acct is not None:
                acct.reserved = max(acct.reserved - reserved, 0.0)
                acct.spent += actual

    def could_fit(self, amount: float, *, account: str | None = None) -> bool:
        """Whether ``amount`` would fit once every reservation now held is settled at 0."""
        acct = self._accounts.get(account) if account is not None else None
        run_ok = self._budget is None or amount <= self._budget - self._spent
        acct_ok = acct is None or acct.cap is None or amount <= acct.cap - acct.spent
        return run_ok and acct_ok
