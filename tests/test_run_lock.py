"""One `dispatch run` per SQLite database, however the file is named: a
symlink or a relative path to the same file is the same database."""

import os

import pytest

from dispatch import bootstrap, db
from dispatch.coordination import SqliteRunLock
from dispatch.errors import ConflictError


@pytest.fixture
def database(tmp_path):
    real = tmp_path / "data" / "subscribers.db"
    real.parent.mkdir()
    engine = db.create_engine(f"sqlite:///{real}")
    bootstrap.init_database(engine)
    engine.dispose()
    return real


def lock_for(url):
    engine = db.create_engine(url)
    try:
        return SqliteRunLock(engine)
    finally:
        engine.dispose()


def test_the_same_file_through_a_symlink_is_refused(database, tmp_path):
    link = tmp_path / "elsewhere.db"
    link.symlink_to(database)
    first = lock_for(f"sqlite:///{database}")
    first.acquire()
    try:
        with pytest.raises(ConflictError, match=f"pid {os.getpid()}.*one `dispatch run` runs at a time"):
            lock_for(f"sqlite:///{link}").acquire()
    finally:
        first.release()
    second = lock_for(f"sqlite:///{link}")  # free again once the first one stops
    second.acquire()
    second.release()


def test_a_relative_path_and_a_symlinked_folder_are_the_same_file(database, tmp_path, monkeypatch):
    (tmp_path / "linked").symlink_to(database.parent, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    first = lock_for("sqlite:///linked/subscribers.db")
    first.acquire()
    try:
        with pytest.raises(ConflictError):
            lock_for(f"sqlite:///{database}").acquire()
    finally:
        first.release()
    assert first.path == database.parent / "subscribers.db.run.lock"


def test_no_lock_for_an_in_memory_database():
    assert lock_for("sqlite://").path is None
