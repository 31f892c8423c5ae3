"""Key secrets and the bootstrap admin key file."""

import stat

from serve_app.security.keys import ensure_admin_key, key_hash, looks_like_key, new_key


def test_keys_are_prefixed_random_and_hashed():
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    for k in keys:
        assert k.startswith("ms_") and looks_like_key(k)
        assert len(k) - 3 >= 43  # 32 random bytes, base64url
    k = next(iter(keys))
    assert key_hash(k) == key_hash(k) and len(key_hash(k)) == 64 and k not in key_hash(k)


def test_admin_key_file_is_written_once_owner_only(tmp_path):
    key, path = ensure_admin_key(None, tmp_path / "data")
    assert path == tmp_path / "data" / "admin.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert looks_like_key(key)
    assert ensure_admin_key(None, tmp_path / "data") == (key, path)


def test_environment_key_wins_and_writes_nothing(tmp_path):
    assert ensure_admin_key("ms_from-env-000000000000", tmp_path) == (
        "ms_from-env-000000000000",
        None,
    )
    assert not (tmp_path / "admin.key").exists()
