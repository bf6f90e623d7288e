// The official ZITADEL Node SDK (@zitadel/client) against a running Latchkey, over every
// transport it offers: gRPC over h2c (createServerTransport), gRPC-web (createClientTransport)
// and Connect JSON and binary (@connectrpc/connect-node). Nothing here is Latchkey-specific:
// this is how a ZITADEL integration talks to ZITADEL.
//
// Usage: node scenario.mjs <base url> <admin token>; exits non-zero on the first failure.

import assert from "node:assert/strict";
import { createClient, ConnectError, Code } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-node";
import { createServerTransport } from "@zitadel/client/node";
import { createClientTransport } from "@zitadel/client/web";
import { UserService } from "@zitadel/proto/zitadel/user/v2/user_service_pb.js";
import { UserState } from "@zitadel/proto/zitadel/user/v2/user_pb.js";
import { OrganizationService } from "@zitadel/proto/zitadel/org/v2/org_service_pb.js";
import { SessionService } from "@zitadel/proto/zitadel/session/v2/session_service_pb.js";
import { SettingsService } from "@zitadel/proto/zitadel/settings/v2/settings_service_pb.js";
import { ResourceOwnerType } from "@zitadel/proto/zitadel/settings/v2/settings_pb.js";
import { ManagementService } from "@zitadel/proto/zitadel/management_pb.js";
import { CredentialsCheckErrorSchema } from "@zitadel/proto/zitadel/message_pb.js";

// bcrypt (cost 4) of PASSWORD: verified like any imported hash, and quickly.
const PASSWORD = "Correct-Horse-7";
const PASSWORD_HASH = "$2b$04$qU73bH1P4E2O2iWF.4vLDebD3Xwd6/5TgSYzf2m5.c/EZf5823Nou";
const MAX_ATTEMPTS = 3;

const [baseUrl, token] = process.argv.slice(2);
if (!baseUrl || !token) {
  console.error("usage: node scenario.mjs <base url> <admin token>");
  process.exit(2);
}

const bearer = (t) => (next) => async (req) => {
  req.header.set("authorization", `Bearer ${t}`);
  return next(req);
};

const transports = {
  "grpc (createServerTransport, h2c)": (t) => createServerTransport(t, { baseUrl }),
  "grpc-web (createClientTransport)": (t) => createClientTransport(t, { baseUrl }),
  "connect json (connect-node)": (t) =>
    createConnectTransport({ baseUrl, httpVersion: "1.1", interceptors: [bearer(t)] }),
  "connect binary (connect-node)": (t) =>
    createConnectTransport({
      baseUrl,
      httpVersion: "1.1",
      useBinaryFormat: true,
      interceptors: [bearer(t)],
    }),
};

async function expectCode(promise, code, what) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof ConnectError, `${what}: expected a ConnectError, got ${e}`);
    assert.equal(e.code, code, `${what}: expected ${Code[code]}, got ${Code[e.code]} (${e.message})`);
    return e;
  }
  assert.fail(`${what}: expected ${Code[code]}, but the call succeeded`);
}

async function scenario(name, makeTransport) {
  const users = createClient(UserService, makeTransport(token));
  const suffix = `${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;

  const added = await users.addHumanUser({
    username: `node-${suffix}`,
    profile: { givenName: "Ada", familyName: "Lovelace" },
    email: { email: `ada-${suffix}@example.com`, verification: { case: "isVerified", value: true } },
  });
  assert.ok(added.userId, "addHumanUser returns an id");
  const created = added.details.sequence;

  const locked = await users.lockUser({ userId: added.userId });
  assert.equal(locked.details.sequence, created + 1n, "lock is the next event");

  const unlocked = await users.unlockUser({ userId: added.userId });
  assert.equal(unlocked.details.sequence, created + 2n, "unlock is the next event");
  assert.ok(unlocked.details.changeDate, "details carry a change date");

  const again = await expectCode(
    users.unlockUser({ userId: added.userId }),
    Code.FailedPrecondition,
    "second unlock",
  );
  assert.match(again.message, /not locked/);

  const got = await users.getUserByID({ userId: added.userId });
  assert.equal(got.user.state, UserState.ACTIVE, "state is ACTIVE");
  assert.equal(got.user.details.sequence, created + 2n, "sequence counts the two commands");
  assert.equal(got.user.type.case, "human");
  assert.equal(got.user.type.value.profile.givenName, "Ada");

  await expectCode(users.unlockUser({ userId: `missing-${suffix}` }), Code.NotFound, "missing user");

  const stranger = createClient(UserService, makeTransport("not-a-token"));
  await expectCode(
    stranger.unlockUser({ userId: added.userId }),
    Code.Unauthenticated,
    "bad token",
  );
  await loginStory(makeTransport(token), suffix);
  console.log(`ok   node ${name}: lifecycle and the login loop`);
}

// ZITADEL's login against Latchkey: wrong passwords counted (CredentialsCheckError read with
// the SDK's own findDetails), the lock at the limit, the lock refused, an administrator's
// unlock, a session read, changed and ended with its token.
async function loginStory(transport, suffix) {
  const orgs = createClient(OrganizationService, transport);
  const org = await orgs.addOrganization({ name: `node-login-${suffix}` });
  const orgHeader = { headers: { "x-zitadel-orgid": org.organizationId } };
  const management = createClient(ManagementService, transport);
  await management.addCustomLockoutPolicy({ maxPasswordAttempts: MAX_ATTEMPTS }, orgHeader);
  const policy = await management.getLockoutPolicy({}, orgHeader);
  assert.equal(policy.policy.maxPasswordAttempts, BigInt(MAX_ATTEMPTS));
  assert.equal(policy.isDefault, false);
  const settings = createClient(SettingsService, transport);
  const lockout = await settings.getLockoutSettings({
    ctx: { resourceOwner: { case: "orgId", value: org.organizationId } },
  });
  assert.equal(lockout.settings.maxPasswordAttempts, BigInt(MAX_ATTEMPTS));
  assert.equal(lockout.settings.resourceOwnerType, ResourceOwnerType.ORG);

  const users = createClient(UserService, transport);
  const added = await users.addHumanUser({
    organization: { org: { case: "orgId", value: org.organizationId } },
    profile: { givenName: "Grace", familyName: "Hopper" },
    email: { email: `grace-${suffix}@example.com`, verification: { case: "isVerified", value: true } },
    passwordType: { case: "hashedPassword", value: { hash: PASSWORD_HASH } },
  });
  const sessions = createClient(SessionService, transport);
  const login = (password) =>
    sessions.createSession({
      checks: {
        user: { search: { case: "userId", value: added.userId } },
        password: { password },
      },
    });

  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const e = await expectCode(login("wrong"), Code.InvalidArgument, `wrong password ${attempt}`);
    const [detail] = e.findDetails(CredentialsCheckErrorSchema);
    assert.ok(detail, `attempt ${attempt}: no CredentialsCheckError in ${e.message}`);
    assert.equal(detail.id, "COMMAND-3M0fs");
    assert.equal(detail.failedAttempts, attempt);
    assert.equal(e.rawMessage, "Password is invalid (COMMAND-3M0fs)");
  }
  const locked = await users.getUserByID({ userId: added.userId });
  assert.equal(locked.user.state, UserState.LOCKED, "locked at the limit");
  const refused = await expectCode(login(PASSWORD), Code.FailedPrecondition, "locked login");
  assert.match(refused.rawMessage, /SESSION-Gj4ko/);

  await users.unlockUser({ userId: added.userId });
  const created = await login(PASSWORD);
  assert.ok(created.sessionId && created.sessionToken, "a session and its token");
  const got = await sessions.getSession({
    sessionId: created.sessionId,
    sessionToken: created.sessionToken,
  });
  assert.equal(got.session.factors.user.id, added.userId);
  assert.ok(got.session.factors.password.verifiedAt, "the password factor is verified");
  const changed = await sessions.setSession({
    sessionId: created.sessionId,
    metadata: { step: new TextEncoder().encode("2") },
  });
  assert.ok(changed.sessionToken && changed.sessionToken !== created.sessionToken, "a new token");
  await sessions.deleteSession({ sessionId: created.sessionId, sessionToken: changed.sessionToken });
  await expectCode(
    sessions.getSession({ sessionId: created.sessionId }),
    Code.NotFound,
    "ended session",
  );
}

let failed = 0;
for (const [name, make] of Object.entries(transports)) {
  try {
    await scenario(name, make);
  } catch (e) {
    failed += 1;
    console.error(`FAIL node ${name}: ${e.stack ?? e}`);
  }
}
process.exit(failed === 0 ? 0 : 1);
