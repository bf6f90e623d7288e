"""The official ZITADEL Python SDK (zitadel-client, Connect JSON over HTTP/1.1) against a running
Latchkey. Nothing here is Latchkey-specific: this is how a ZITADEL integration talks to ZITADEL.

Usage: python scenario.py <base url> <admin token>; exits non-zero on the first failure.

The SDK returns None (instead of raising) when a 2xx body fails its own model validation, so
every result is asserted on, not just "did not raise".
"""

import base64
import contextlib
import io
import json
import sys
import time
import uuid

# authlib (a dependency of the SDK) prints a deprecation warning on import and forces its own
# "always" filter, so the usual warning filters cannot silence it; keep it out of CI logs.
with contextlib.redirect_stderr(io.StringIO()):
    import zitadel_client

import requests  # noqa: E402  (the SDK's own HTTP client)
from zitadel_client.exceptions import ApiError  # noqa: E402
from zitadel_client.models import (  # noqa: E402
    OrganizationServiceAddOrganizationRequest,
    SessionServiceCheckPassword,
    SessionServiceChecks,
    SessionServiceCheckUser,
    SessionServiceCreateSessionRequest,
    SessionServiceDeleteSessionRequest,
    SessionServiceGetSessionRequest,
    SessionServiceSetSessionRequest,
    SettingsServiceGetLockoutSettingsRequest,
    SettingsServiceRequestContext,
    UserServiceAddHumanUserRequest,
    UserServiceGetUserByIDRequest,
    UserServiceHashedPassword,
    UserServiceLockUserRequest,
    UserServiceOrganization,
    UserServiceSetHumanEmail,
    UserServiceSetHumanProfile,
    UserServiceUnlockUserRequest,
    UserServiceUserState,
)

# bcrypt (cost 4) of PASSWORD: Latchkey verifies it like any imported hash, and quickly.
PASSWORD = "Correct-Horse-7"
PASSWORD_HASH = "$2b$04$qU73bH1P4E2O2iWF.4vLDebD3Xwd6/5TgSYzf2m5.c/EZf5823Nou"
MAX_ATTEMPTS = 3


def expect_error(call, status, connect_code, what):
    try:
        result = call()
    except ApiError as e:
        assert e.code == status, f"{what}: HTTP {e.code}, expected {status} ({e.response_body})"
        body = e.response_body if isinstance(e.response_body, str) else str(e.response_body)
        assert connect_code in body, f"{what}: body {body!r} lacks {connect_code!r}"
        return
    raise AssertionError(f"{what}: expected {connect_code}, got {result!r}")


def error_body(e: ApiError) -> dict:
    body = e.response_body
    if isinstance(body, (bytes, str)):
        body = json.loads(body)
    return body


def credentials_check_error(call, what):
    """Calls, expects the Connect error ZITADEL's login reads: its CredentialsCheckError detail
    as (HTTP status, connect code, id, failed attempts), decoded from the SDK's ApiError."""
    try:
        result = call()
    except ApiError as e:
        body = error_body(e)
        detail = body["details"][0]
        assert detail["type"] == "zitadel.v1.CredentialsCheckError", f"{what}: {body}"
        # The value is the binary message (base64, unpadded); the debug member its JSON form.
        raw = base64.b64decode(detail["value"] + "=" * (-len(detail["value"]) % 4))
        assert raw.startswith(b"\x0a\x0d"), f"{what}: value {raw!r}"
        debug = detail["debug"]
        return e.code, body["code"], debug["id"], int(debug.get("failedAttempts", 0))
    raise AssertionError(f"{what}: expected a CredentialsCheckError, got {result!r}")


def login_story(client, base_url: str, token: str, suffix: str) -> None:
    """ZITADEL's login against Latchkey: wrong passwords counted and locked at the limit, the
    lock refused, an administrator's unlock, a session read, changed and ended with its token."""
    org = client.organizations.add_organization(
        OrganizationServiceAddOrganizationRequest(name=f"py-login-{suffix}")
    )
    assert org is not None and org.organization_id, f"add_organization: {org!r}"
    # The organization's lockout policy, as a ZITADEL admin sets it (management v1 over REST;
    # the SDK has no v1 client).
    reply = requests.post(
        f"{base_url}/management/v1/policies/lockout",
        headers={"Authorization": f"Bearer {token}", "x-zitadel-orgid": org.organization_id},
        json={"maxPasswordAttempts": MAX_ATTEMPTS},
        timeout=10,
    )
    assert reply.status_code == 200, f"lockout policy: {reply.status_code} {reply.text}"
    settings = client.settings.get_lockout_settings(
        SettingsServiceGetLockoutSettingsRequest(
            ctx=SettingsServiceRequestContext(org_id=org.organization_id)
        )
    )
    assert settings is not None and int(settings.settings.max_password_attempts) == MAX_ATTEMPTS, (
        f"lockout settings: {settings!r}"
    )

    added = client.users.add_human_user(
        UserServiceAddHumanUserRequest(
            organization=UserServiceOrganization(org_id=org.organization_id),
            profile=UserServiceSetHumanProfile(given_name="Grace", family_name="Hopper"),
            email=UserServiceSetHumanEmail(email=f"grace-{suffix}@example.com", is_verified=True),
            hashed_password=UserServiceHashedPassword(hash=PASSWORD_HASH),
        )
    )
    assert added is not None and added.user_id, f"add_human_user: {added!r}"

    def login(password):
        return client.sessions.create_session(
            SessionServiceCreateSessionRequest(
                checks=SessionServiceChecks(
                    user=SessionServiceCheckUser(user_id=added.user_id),
                    password=SessionServiceCheckPassword(password=password),
                )
            )
        )

    for attempt in range(1, MAX_ATTEMPTS + 1):
        got = credentials_check_error(lambda: login("wrong"), f"wrong password {attempt}")
        assert got == (400, "invalid_argument", "COMMAND-3M0fs", attempt), f"attempt {attempt}: {got}"
    user = client.users.get_user_by_id(UserServiceGetUserByIDRequest(user_id=added.user_id))
    assert user.user.state == UserServiceUserState.USER_STATE_LOCKED, f"state: {user.user.state!r}"

    # Locked: the right password is refused at the user check (no hash is verified).
    try:
        login(PASSWORD)
        raise AssertionError("a locked user logged in")
    except ApiError as e:
        body = error_body(e)
        # Connect's status for failed_precondition is 400 (connect-go since it left 412).
        assert e.code == 400 and body["code"] == "failed_precondition", f"locked: {e.code} {body}"
        assert body["details"][0]["debug"]["id"] == "SESSION-Gj4ko", f"locked: {body}"

    unlocked = client.users.unlock_user(UserServiceUnlockUserRequest(user_id=added.user_id))
    assert unlocked is not None, "unlock"
    created = login(PASSWORD)
    assert created is not None and created.session_id and created.session_token, f"login: {created!r}"

    got = client.sessions.get_session(
        SessionServiceGetSessionRequest(session_id=created.session_id, session_token=created.session_token)
    )
    assert got is not None and got.session.factors.user.id == added.user_id, f"get_session: {got!r}"
    assert got.session.factors.password.verified_at is not None, f"factors: {got.session.factors!r}"

    changed = client.sessions.set_session(
        SessionServiceSetSessionRequest(session_id=created.session_id, lifetime="600s")
    )
    assert changed is not None and changed.session_token not in ("", created.session_token), (
        f"set_session: {changed!r}"
    )
    ended = client.sessions.delete_session(
        SessionServiceDeleteSessionRequest(session_id=created.session_id, session_token=changed.session_token)
    )
    assert ended is not None, "delete_session"
    expect_error(
        lambda: client.sessions.get_session(SessionServiceGetSessionRequest(session_id=created.session_id)),
        404,
        "not_found",
        "ended session",
    )


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
    login_story(client, base_url, token, suffix)
    print("ok   python zitadel-client (connect json): lifecycle and the login loop")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python scenario.py <base url> <admin token>", file=sys.stderr)
        sys.exit(2)
    try:
        main(sys.argv[1], sys.argv[2])
    except AssertionError as e:
        print(f"FAIL python zitadel-client: {e}", file=sys.stderr)
        sys.exit(1)
