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
  console.log(`ok   node ${name}`);
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
