"""Console logins: who may sign in, with which password, and which store they see.

Passwords are stored as Argon2id hashes (argon2-cffi, its default parameters); a hash made with
older parameters is rehashed at the next good login. Store staff see one store; an admin
(`store_id` None) sees every store.
"""

from __future__ import annotations

from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from cartstream.exceptions import ConfigurationError
from cartstream.services.storage.db import StaffUserRow

_hasher = PasswordHasher()
MIN_PASSWORD = 10


@dataclass(frozen=True)
class StaffUser:
    username: str
    store_id: str | None  # None: an admin, every store

    @property
    def is_admin(self) -> bool:
        return self.store_id is None

    def may_see(self, store_id: str) -> bool:
        return self.store_id is None or self.store_id == store_id


class StaffDirectory:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        # verified against when a name is unknown, so a login takes as long either way
        self._decoy = _hasher.hash("not a password of anyone's")

    def set_user(self, username: str, password: str, store_id: str | None) -> None:
        """Create the login, or change its password and store (`store_id` None: an admin)."""
        if not username or len(username) > 128 or not username.isprintable():
            raise ConfigurationError("a username is 1-128 printable characters")
        if len(password) < MIN_PASSWORD:
            raise ConfigurationError(f"a password has at least {MIN_PASSWORD} characters")
        with Session(self.engine) as s, s.begin():
            row = s.get(StaffUserRow, username)
            if row is None:
                row = StaffUserRow(username=username)
                s.add(row)
            row.password_hash = _hasher.hash(password)
            row.store_id = store_id
            row.is_admin = store_id is None

    def verify(self, username: str, password: str) -> StaffUser | None:
        """The user when the password is theirs, else None (same answer for an unknown name)."""
        with Session(self.engine) as s:
            row = s.get(StaffUserRow, username)
            stored = row.password_hash if row is not None else self._decoy
            try:
                _hasher.verify(stored, password)
            except (VerificationError, InvalidHashError):
                return None
            if row is None:
                return None
            if _hasher.check_needs_rehash(stored):
                with s.begin():
                    row.password_hash = _hasher.hash(password)
            return StaffUser(row.username, None if row.is_admin else row.store_id)

    def get(self, username: str) -> StaffUser | None:
        with Session(self.engine) as s:
            row = s.scalar(select(StaffUserRow).where(StaffUserRow.username == username))
            if row is None:
                return None
            return StaffUser(row.username, None if row.is_admin else row.store_id)
