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
const FAILED = 4; // sent while the receiver fails, then recovered
// Svix's MessageStatus and MessageAttemptTriggerType.
const SUCCESS = 0;
const FAIL = 2;
const MANUAL = 1;

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
// Like waitFor, for a condition that asks the API.
async function poll(what, done, timeoutMs = 90_000) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const got = await done();
    if (got) return got;
    await new Promise((r) => setTimeout(r, 100));
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

// The receiver: records every POST and answers 200, or 503 while `failing` (recorded apart).
const received = [];
const refusedHere = [];
let failing = false;
const server = http.createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const entry = { at: Date.now(), headers: req.headers, body: Buffer.concat(chunks) };
    (failing ? refusedHere : received).push(entry);
    res.writeHead(failing ? 503 : 200, { "content-length": "0" });
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

// Attempts, from the operations index, and the message's state at its endpoint.
const first = sent[0].msg;
const ok = await poll("the message's attempt", async () =>
  (await svix.messageAttempt.listByMsg(app.id, first.id)).data.find((a) => a.status === SUCCESS));
check(ok.id.startsWith("atmpt_") && ok.endpointId === ep.id && ok.responseStatusCode === 200,
  `attempt: ${JSON.stringify(ok)}`);
check((await svix.messageAttempt.get(app.id, first.id, ok.id)).id === ok.id, "an attempt by id");
await poll("every attempt listed by endpoint", async () => {
  const page = await svix.messageAttempt.listByEndpoint(app.id, ep.id, { limit: 250 });
  return sent.every(({ msg }) => page.data.some((a) => a.msgId === msg.id));
});
const state = async (msg, status) => {
  const d = (await svix.messageAttempt.listAttemptedDestinations(app.id, msg.id)).data;
  return d.length === 1 && d[0].id === ep.id && d[0].status === status;
};
await poll("the message's state", () => state(first, SUCCESS));
await refused(404, () => other.messageAttempt.listByMsg(app.id, first.id),
  "another tenant listing the attempts");

const deliveredAs = (id) => received.filter((r) => r.headers["svix-id"] === id);
await svix.messageAttempt.resend(app.id, first.id, ep.id);
await waitFor("the resent message", () => deliveredAs(first.id).length >= 2);
new Webhook(fresh).verify(deliveredAs(first.id)[1].body, deliveredAs(first.id)[1].headers);

const ex = await svix.endpoint.sendExample(app.id, ep.id, { eventType: type });
check(ex.id.startsWith("msg_"), `example: ${JSON.stringify(ex)}`);
await waitFor("the example", () => deliveredAs(ex.id).length === 1);
new Webhook(fresh).verify(deliveredAs(ex.id)[0].body, deliveredAs(ex.id)[0].headers);

// The receiver fails until the messages are dead-lettered; recover sends them again in order.
const since = new Date(Date.now() - 5000);
failing = true;
const lost = [];
for (let k = 0; k < FAILED; k++) {
  lost.push(await svix.message.create(app.id, { eventType: type, payload: { lost: k } }));
}
for (const m of lost) await poll(`${m.id} dead-lettered`, () => state(m, FAIL));
check(refusedHere.length >= FAILED, `${refusedHere.length} refused attempts`);
failing = false;
const task = await svix.endpoint.recover(app.id, ep.id, { since });
check(task.status === "running" && task.task === "endpoint.recover", `recover: ${JSON.stringify(task)}`);
const ids = lost.map((m) => m.id);
await waitFor("the recovered messages", () => ids.every((i) => deliveredAs(i).length >= 1));
const order = received.filter((r) => ids.includes(r.headers["svix-id"])).map((r) => r.headers["svix-id"]);
check(JSON.stringify(order) === JSON.stringify(ids), `recovered once each, in order: ${order}`);
for (const i of ids) new Webhook(fresh).verify(deliveredAs(i)[0].body, deliveredAs(i)[0].headers);
const manual = await poll("the recovered attempt", async () =>
  (await svix.messageAttempt.listByMsg(app.id, ids[0])).data.find((a) => a.status === SUCCESS));
check(manual.triggerType === MANUAL, `trigger: ${JSON.stringify(manual)}`);

await svix.endpoint.delete(app.id, ep.id);
await svix.application.delete(app.id);
await refused(404, () => svix.application.get(app.id), "a deleted application");
await admin.eventType.delete(type);
server.close();
console.log(`svix npm flow: ok (${MESSAGES + 3 + FAILED} deliveries verified, ${span.toFixed(2)} s at ${RATE}/s)`);
