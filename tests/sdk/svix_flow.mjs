// The official Svix JavaScript SDK (npm `svix`, unchanged) against Hookline's Svix-compatible
// API, with a real HTTP receiver on 127.0.0.1 that every delivery is checked on with the
// SDK's own `new Webhook(secret).verify(body, headers)`.
//
// Run by tests/e2e/svix_sdk.rs with Node 20: HOOKLINE_API_URL, HOOKLINE_TOKEN,
// HOOKLINE_OTHER_TOKEN, HOOKLINE_ADMIN_TOKEN, and HOOKLINE_SVIX_NPM (the folder whose
// node_modules holds the SDK, made by `scripts/svix-sdk.sh ensure-npm`). Exits non-zero with
// the reason at the first failure; waits on conditions, never a fixed sleep.

import http from "node:http";
import { randomUUID } from "node:crypto";
import { pathToFileURL } from "node:url";

const sdk = await import(
  pathToFileURL(`${process.env.HOOKLINE_SVIX_NPM}/node_modules/svix/dist/index.mjs`).href
);
const { Svix, Webhook, WebhookVerificationError, ApiException } = sdk;

const API = process.env.HOOKLINE_API_URL;
const RATE = 20;
const MESSAGES = 30;

function fail(why) {
  console.error(`svix npm flow: FAILED: ${why}`);
  process.exit(1);
}
function check(ok, why) {
  if (!ok) fail(why);
}
async function waitFor(what, done, timeoutMs = 90_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const got = done();
    if (got) return got;
    await new Promise((r) => setTimeout(r, 50));
  }
  fail(`timed out waiting for ${what}`);
}
async function refused(status, call, what) {
  try {
    await call();
  } catch (e) {
    check(e instanceof ApiException, `${what}: ${e}`);
    check(e.code === status, `${what}: status ${e.code}, wanted ${status}`);
    return e;
  }
  fail(`${what}: accepted, wanted ${status}`);
}

// The receiver: records every POST, answers 200.
const received = [];
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    received.push({ at: Date.now(), headers: req.headers, body: Buffer.concat(chunks) });
    res.writeHead(200, { "content-length": "0" });
    res.end();
  });
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const url = `http://127.0.0.1:${server.address().port}/hook`;

const client = (token) => new Svix(token, { serverUrl: API });
const svix = client(process.env.HOOKLINE_TOKEN);
const other = client(process.env.HOOKLINE_OTHER_TOKEN);
const admin = client(process.env.HOOKLINE_ADMIN_TOKEN);
const run = randomUUID().slice(0, 8);
const type = `order${run}.paid`;

await svix.health.get();
await admin.eventType.create({ name: type, description: "an order was paid" });
check((await svix.eventType.get(type)).name === type, "event type get");
await refused(403, () => svix.eventType.create({ name: `x${run}.y`, description: "d" }),
  "a tenant editor writing the catalog");

const app = await svix.application.create({ name: "npm app", uid: `npm-${run}` });
check(app.id.startsWith("app_"), `application: ${JSON.stringify(app)}`);
check((await svix.application.getOrCreate({ name: "npm app", uid: `npm-${run}` })).id === app.id,
  "getOrCreate");
const ep = await svix.endpoint.create(app.id, {
  url, eventTypes: [type], throttleRate: RATE, description: "the npm SDK's receiver",
});
check(ep.id.startsWith("ep_") && ep.throttleRate === RATE, `endpoint: ${JSON.stringify(ep)}`);
await svix.endpoint.setHeaders(app.id, ep.id, { headers: { "X-Api-Key": "npm-key" } });
check((await svix.endpoint.getHeaders(app.id, ep.id)).sensitive.includes("x-api-key"), "headers");
const secret = (await svix.endpoint.getSecret(app.id, ep.id)).key;

await refused(404, () => other.application.get(app.id), "another tenant reading the app");
await refused(404, () => other.endpoint.getSecret(app.id, ep.id), "another tenant's secret read");
await refused(404, () => other.message.create(app.id, { eventType: type, payload: {} }),
  "another tenant sending to the app");

const sent = [];
for (let n = 0; n < MESSAGES; n++) {
  const payload = { n, order: { id: `o${n}`, total: 12.5 } };
  const msg = await svix.message.create(app.id, { eventType: type, payload, eventId: `e-${run}-${n}` });
  check(msg.id.startsWith("msg_"), `message: ${JSON.stringify(msg)}`);
  sent.push({ msg, payload });
}
await refused(409, () => svix.message.create(app.id, { eventType: type, payload: {}, eventId: `e-${run}-0` }),
  "a repeated eventId");

await waitFor(`${MESSAGES} deliveries`, () => received.length >= MESSAGES);
check(received.length === MESSAGES, `${received.length} deliveries for ${MESSAGES} messages`);
const ns = [];
for (const r of received) {
  new Webhook(secret).verify(r.body, r.headers); // throws on a bad signature
  check(r.headers["x-api-key"] === "npm-key", "the custom header");
  ns.push(JSON.parse(r.body.toString()).n);
}
check(JSON.stringify(ns) === JSON.stringify([...ns].sort((a, b) => a - b)), `order: ${ns}`);
for (const { msg, payload } of sent) {
  const r = received.find((x) => x.headers["svix-id"] === msg.id);
  check(r && r.body.toString() === JSON.stringify(payload), `the body of ${msg.id}`);
}
const span = (received.at(-1).at - received[0].at) / 1000;
check(span >= ((MESSAGES - 1) / RATE) * 0.8, `${MESSAGES} deliveries in ${span} s at ${RATE}/s`);

const seen = [];
let iterator = null;
for (;;) {
  const page = await svix.message.list(app.id, { limit: 8, iterator });
  seen.push(...page.data.map((m) => m.id));
  if (page.done) break;
  iterator = page.iterator;
}
check(seen.length === MESSAGES, `message list: ${seen.length}`);

await svix.endpoint.rotateSecret(app.id, ep.id, { gracePeriodSeconds: 0 });
const fresh = (await svix.endpoint.getSecret(app.id, ep.id)).key;
check(fresh !== secret, "rotation gives a new secret");
const before = received.length;
await svix.message.create(app.id, { eventType: type, payload: { late: true } });
await waitFor("a delivery after the rotation", () => received.length > before);
const late = received[before];
new Webhook(fresh).verify(late.body, late.headers);
try {
  new Webhook(secret).verify(late.body, late.headers);
  fail("a delivery after the rotation verifies with the old secret");
} catch (e) {
  check(e instanceof WebhookVerificationError, `old secret: ${e}`);
}

await svix.endpoint.delete(app.id, ep.id);
await svix.application.delete(app.id);
await refused(404, () => svix.application.get(app.id), "a deleted application");
await admin.eventType.delete(type);
server.close();
console.log(`svix npm flow: ok (${MESSAGES + 1} deliveries verified, ${span.toFixed(2)} s at ${RATE}/s)`);
