"""Message-IDs carry a random part kept in the database: deterministic per
delivery, different for every installation (issue 16, point 5)."""

import email
import email.policy

from dispatch import bootstrap, db, mime
from dispatch.adapters.smtp import SmtpAdapter

from .servers import scripted_smtp
from .test_smtp_adapter import CONTENT


def test_the_installation_part_is_kept_and_differs_between_databases(engine, tmp_path):
    first = bootstrap.installation_id(engine)
    assert first == bootstrap.installation_id(engine)  # made once, then read back
    other = db.create_engine(f"sqlite:///{tmp_path / 'rebuilt.db'}")
    bootstrap.init_database(other)
    try:
        assert bootstrap.installation_id(other) != first  # a rebuilt database: new ids
    finally:
        other.dispose()
    assert len(first) == 12 and first.isalnum()


def test_two_installations_never_send_the_same_message_id(tmp_path, sqlite_url):
    sink, handler = scripted_smtp(tmp_path / "mail")
    ids = []
    try:
        for name in ("a.db", "b.db"):
            engine = db.create_engine(f"sqlite:///{tmp_path / name}")
            bootstrap.init_database(engine)
            installation = bootstrap.installation_id(engine)
            adapter = SmtpAdapter(host=sink.host, port=sink.port, mail_from="news@example.org", timeout=5,
                                  installation=installation)
            receipt = adapter.send("r@example.org", CONTENT, delivery_id=1)
            again = adapter.build("r@example.org", CONTENT, delivery_id=1)[0]
            assert receipt == again == f"<delivery-1.{mime.delivery_tag(installation, 1)}@example.org>"  # deterministic per delivery
            adapter.close()
            engine.dispose()
            ids.append(receipt)
    finally:
        sink.stop()
    assert ids[0] != ids[1]
    messages = [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)
                for p in sorted(handler.folder.glob("*.eml"))]
    assert sorted(m["Message-ID"] for m in messages) == sorted(ids)


def test_an_installation_part_that_could_break_the_header_is_refused():
    import pytest

    with pytest.raises(ValueError, match="installation"):
        SmtpAdapter(host="127.0.0.1", port=25, mail_from="news@example.org", installation="a>b\r\nBcc: x")
