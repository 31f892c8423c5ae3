"""Tenant scoping of user ids: one mapping, unchanged for `default`, never two pairs to one id."""

import re

from hypothesis import given
from hypothesis import strategies as st

from memserve.models import ID_PATTERN, TENANT_PATTERN
from serve_app.security.principal import scoped_user, split_user

tenants = st.from_regex(TENANT_PATTERN, fullmatch=True)
users = st.from_regex(ID_PATTERN, fullmatch=True).filter(lambda u: len(u) <= 128)


def test_default_tenant_keeps_ids():
    assert scoped_user("default", "alice") == "alice"
    assert scoped_user("acme", "alice") == "acme/alice"
    assert split_user("acme/alice") == ("acme", "alice")
    assert split_user("alice") == ("default", "alice")


@given(tenants, users, tenants, users)
def test_scoping_is_injective_and_reversible(t1, u1, t2, u2):
    assert split_user(scoped_user(t1, u1)) == (t1, u1)
    if (t1, u1) != (t2, u2):
        assert scoped_user(t1, u1) != scoped_user(t2, u2)
    assert not re.match(ID_PATTERN, scoped_user(t1, u1)) or t1 == "default"
