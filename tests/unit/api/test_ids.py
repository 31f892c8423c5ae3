import pytest

from serve_app.api import ids
from serve_app.api.errors import ApiError


def test_uuids_are_canonical():
    assert (
        ids.memory_id("1B4E28BA2FA111D2883F0016D3CCA427") == "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    )


@pytest.mark.parametrize(("parse", "code"), [(ids.memory_id, "invalid_memory_id"),
                                             (ids.job_id, "invalid_job_id")])  # fmt: skip
def test_a_non_uuid_is_422_naming_the_id(parse, code):
    with pytest.raises(ApiError) as e:
        parse("m-1")
    assert (e.value.status, e.value.code) == (422, code)
    assert "'m-1'" in e.value.message


async def test_require_user_is_404_for_an_unknown_user():
    class Repo:
        async def user_exists(self, user_id: str) -> bool:
            return user_id == "u"

    await ids.require_user(Repo(), "u")
    with pytest.raises(ApiError) as e:
        await ids.require_user(Repo(), "v")
    assert (e.value.status, e.value.code) == (404, "unknown_user")
