"""An upload remembers its uploader's language whole, however long the BCP 47 tag (PostgreSQL
enforces the column's length; SQLite does not, so this bites there only)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from jaejin.core.accounts import Role
from jaejin.core.database import session_factory
from jaejin.monitoring.store import UploadRow
from tests.core.helpers import fast_password_hashing
from tests.support import sign_in


@pytest.fixture(autouse=True)
def _cheap_password_hashing() -> Iterator[None]:
    with fast_password_hashing():
        yield


def test_an_upload_by_a_cantonese_speaker_keeps_the_long_language_tag(client, actors, db):
    person = actors.person("a", Role.PATIENT)
    person.user.language = "yue-Hant-HK"
    db.commit()
    taken = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    csv = f"effective_at,metric,value,unit\n{taken},body_weight,71.5,kg\n".encode()

    response = client.post(
        f"/api/v1/monitoring/patients/{actors.patients['a'].id}/uploads",
        files={"file": ("weight.csv", csv, "text/csv")},
        headers={"X-CSRF-Token": sign_in(client, person)})

    assert response.status_code == 202, response.text
    with session_factory(db.get_bind())() as session:
        [stored] = session.execute(select(UploadRow)).scalars().all()
    assert stored.language == "yue-Hant-HK"
