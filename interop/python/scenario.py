"""The official ZITADEL Python SDK (zitadel-client, Connect JSON over HTTP/1.1) against a running
Latchkey. Nothing here is Latchkey-specific: this is how a ZITADEL integration talks to ZITADEL.

Usage: python scenario.py <base url> <admin token>; exits non-zero on the first failure.

The SDK returns None (instead of raising) when a 2xx body fails its own model validation, so
every result is asserted on, not just "did not raise".
"""

import contextlib
import io
import sys
import time
import uuid

# authlib (a dependency of the SDK) prints a deprecation warning on import and forces its own
# "always" filter, so the usual warning filters cannot silence it; keep it out of CI logs.
with contextlib.redirect_stderr(io.StringIO()):
    import zitadel_client

from zitadel_client.exceptions import ApiError  # noqa: E402
from zitadel_client.models import (  # noqa: E402
    UserServiceAddHumanUserRequest,
    UserServiceGetUserByIDRequest,
    UserServiceLockUserRequest,
    UserServiceSetHumanEmail,
    UserServiceSetHumanProfile,
    UserServiceUnlockUserRequest,
    UserServiceUserState,
)


def expect_error(call, status, connect_code, what):
    try:
        result = call()
    except ApiError as e:
        assert e.code == status, f"{what}: HTTP {e.code}, expected {status} ({e.response_body})"
        body = e.response_body if isinstance(e.response_body, str) else str(e.response_body)
        assert connect_code in body, f"{what}: body {body!r} lacks {connect_code!r}"
        return
    raise AssertionError(f"{what}: expected {connect_code}, got {result!r}")


def main(base_url: str, token: str) -> None:
    client = zitadel_client.Zitadel.with_access_token(base_url, token)
    suffix = f"{int(time.time())}-{uuid.uuid4().hex[:6]}"

    added = client.users.add_human_user(
        UserServiceAddHumanUserRequest(
            username=f"py-{suffix}",
            profile=UserServiceSetHumanProfile(given_name="Ada", family_name="Lovelace"),
            email=UserServiceSetHumanEmail(email=f"ada-{suffix}@example.com", is_verified=True),
        )
    )
    assert added is not None and added.user_id, f"add_human_user: {added!r}"
    created = int(added.details.sequence)

    locked = client.users.lock_user(UserServiceLockUserRequest(user_id=added.user_id))
    assert locked is not None and int(locked.details.sequence) == created + 1, f"lock: {locked!r}"

    unlocked = client.users.unlock_user(UserServiceUnlockUserRequest(user_id=added.user_id))
    assert unlocked is not None and int(unlocked.details.sequence) == created + 2, f"unlock: {unlocked!r}"

    expect_error(
        lambda: client.users.unlock_user(UserServiceUnlockUserRequest(user_id=added.user_id)),
        400,
        "failed_precondition",
        "second unlock",
    )

    got = client.users.get_user_by_id(UserServiceGetUserByIDRequest(user_id=added.user_id))
    assert got is not None and got.user is not None, f"get: {got!r}"
    assert got.user.state == UserServiceUserState.USER_STATE_ACTIVE, f"state: {got.user.state!r}"
    assert int(got.user.details.sequence) == created + 2, f"sequence: {got.user.details!r}"
    assert got.user.human.profile.given_name == "Ada", f"profile: {got.user.human!r}"

    expect_error(
        lambda: client.users.unlock_user(UserServiceUnlockUserRequest(user_id=f"missing-{suffix}")),
        404,
        "not_found",
        "missing user",
    )

    stranger = zitadel_client.Zitadel.with_access_token(base_url, "not-a-token")
    expect_error(
        lambda: stranger.users.unlock_user(UserServiceUnlockUserRequest(user_id=added.user_id)),
        401,
        "unauthenticated",
        "bad token",
    )
    print("ok   python zitadel-client (connect json)")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python scenario.py <base url> <admin token>", file=sys.stderr)
        sys.exit(2)
    try:
        main(sys.argv[1], sys.argv[2])
    except AssertionError as e:
        print(f"FAIL python zitadel-client: {e}", file=sys.stderr)
        sys.exit(1)
