#!/usr/bin/env python3
"""The official Svix Python SDK (PyPI `svix`, unchanged) against Hookline's Svix-compatible
API, with a real HTTP receiver on 127.0.0.1 that every delivery is checked on with the SDK's
own `Webhook(secret).verify(body, headers)`.

Run by tests/e2e/svix_sdk.rs against a stack of its own: HOOKLINE_API_URL, HOOKLINE_TOKEN
(an editor of one tenant), HOOKLINE_OTHER_TOKEN (another tenant's editor),
HOOKLINE_ADMIN_TOKEN (the catalog is the platform's: admins write event types). Exits
non-zero with the reason at the first failure; waits on conditions, never a fixed sleep.
"""

import json
import os
import sys
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from svix.api import (
    ApplicationIn,
    ApplicationPatch,
    EndpointHeadersIn,
    EndpointIn,
    EndpointSecretRotateIn,
    EventExampleIn,
    EventTypeIn,
    EventTypeListOptions,
    EventTypePatch,
    MessageAttemptListByEndpointOptions,
    MessageAttemptListAttemptedMessagesOptions,
    MessageAttemptListByMsgOptions,
    MessageGetOptions,
    MessageIn,
    MessageListOptions,
    RecoverIn,
    Svix,
    SvixOptions,
)
from svix.models import BackgroundTaskStatus, MessageAttemptTriggerType, MessageStatus
from svix.exceptions import HttpError, HTTPValidationError
from svix.webhooks import Webhook, WebhookVerificationError

API = os.environ["HOOKLINE_API_URL"]
TOKEN = os.environ["HOOKLINE_TOKEN"]
OTHER = os.environ["HOOKLINE_OTHER_TOKEN"]
ADMIN = os.environ["HOOKLINE_ADMIN_TOKEN"]
RATE = 20  # the endpoint's throttleRate, deliveries per second
MESSAGES = 100  # sent through the SDK, ordered by the application (the default key)
KEYS = ["acct-1", "acct-2", "acct-3", "acct-4"]  # finer keys (the `orderingKey` extension)
PER_KEY = 25
FAILED = 5  # sent while the receiver fails, then recovered


def fail(why):
    print(f"svix sdk flow: FAILED: {why}", file=sys.stderr, flush=True)
    sys.exit(1)


def check(ok, why):
    if not ok:
        fail(why)


def wait_for(what, done, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = done()
        if got:
            return got
        time.sleep(0.05)
    fail(f"timed out after {timeout:.0f} s waiting for {what}")


def refused(status, call, what):
    """`call` must fail with an SDK error of `status`."""
    try:
        call()
    except (HttpError, HTTPValidationError) as e:
        check(e.status_code == status, f"{what}: status {e.status_code}, wanted {status}")
        return e
    fail(f"{what}: accepted, wanted {status}")


class Receiver:
    """A real HTTP receiver: records every POST (arrival time, headers, body) and answers
    200, or 503 while `failing` (those are recorded apart, in `refused`)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.got = []
        self.refused = []
        self.failing = False
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                entry = (time.monotonic(), {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver.lock:
                    failing = receiver.failing
                    (receiver.refused if failing else receiver.got).append(entry)
                self.send_response(503 if failing else 200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def received(self):
        with self.lock:
            return list(self.got)

    def fail(self, failing):
        with self.lock:
            self.failing = failing


def client(token):
    # Only the server URL is Hookline's: the SDK is used as a Svix customer uses it.
    return Svix(token, SvixOptions(server_url=API))


def main():
    svix, other, admin = client(TOKEN), client(OTHER), client(ADMIN)
    receiver = Receiver()
    run = uuid.uuid4().hex[:8]
    signup, deleted = f"user{run}.signup", f"user{run}.deleted"

    svix.health.get()

    # Event types: catalog entries, written by an admin.
    example = {"user": {"id": "u-example"}}
    for name in (signup, deleted):
        schemas = {"1": {"type": "object", "examples": [example]}} if name == signup else None
        out = admin.event_type.create(
            EventTypeIn(name=name, description=f"{name} happened", schemas=schemas))
        check(out.name == name, f"event type create: {out}")
    check(svix.event_type.get(signup).description == f"{signup} happened", "event type get")
    names = set()
    it = None
    while True:
        page = svix.event_type.list(EventTypeListOptions(limit=50, iterator=it))
        names.update(t.name for t in page.data)
        if page.done:
            break
        it = page.iterator
    check({signup, deleted} <= names, "event type list walks every type")
    refused(403, lambda: svix.event_type.create(EventTypeIn(name=f"x{run}.y", description="d")),
            "a tenant editor writing the catalog")
    patched = admin.event_type.patch(deleted, EventTypePatch(deprecated=True))
    check(patched.deprecated and patched.description == f"{deleted} happened",
          f"event type patch changes only what it names: {patched}")
    refused(403, lambda: svix.event_type.patch(signup, EventTypePatch(deprecated=True)),
            "a tenant editor patching the catalog")

    # An application of this tenant.
    app = svix.application.create(
        ApplicationIn(name="SDK app", uid=f"sdk-{run}", throttle_rate=1000, metadata={"team": "a"})
    )
    check(app.id.startswith("app_") and app.uid == f"sdk-{run}", f"application: {app}")
    check(app.throttle_rate == 1000 and app.metadata == {"team": "a"}, f"application: {app}")
    again = svix.application.get_or_create(ApplicationIn(name="SDK app", uid=f"sdk-{run}"))
    check(again.id == app.id, "get_or_create finds the application by uid")
    check(svix.application.get(app.uid).id == app.id, "an application by its uid")
    renamed = svix.application.patch(app.id, ApplicationPatch(name="SDK app, renamed"))
    check(renamed.name == "SDK app, renamed" and renamed.uid == app.uid, f"patch: {renamed}")
    check(any(a.id == app.id for a in svix.application.list().data), "application list")
    refused(409, lambda: svix.application.create(ApplicationIn(name="twin", uid=f"sdk-{run}")),
            "a second application with the same uid")
    refused(422, lambda: svix.endpoint.create(app.id, EndpointIn(url="not a url")),
            "an endpoint with a bad url")

    # An endpoint to the receiver, with a custom header and a rate limit.
    ep = svix.endpoint.create(
        app.id,
        EndpointIn(url=receiver.url, event_types=[signup, deleted], throttle_rate=RATE,
                   uid=f"ep-{run}", description="the SDK's receiver"),
    )
    check(ep.id.startswith("ep_") and ep.throttle_rate == RATE, f"endpoint: {ep}")
    check(sorted(ep.event_types) == sorted([signup, deleted]), f"endpoint types: {ep}")
    check(svix.endpoint.get(app.id, f"ep-{run}").id == ep.id, "an endpoint by its uid")
    svix.endpoint.set_headers(app.id, ep.id, EndpointHeadersIn(headers={"X-Api-Key": "k-123"}))
    headers = svix.endpoint.get_headers(app.id, ep.id)
    check("x-api-key" in headers.sensitive and not headers.headers, f"headers: {headers}")
    secret = svix.endpoint.get_secret(app.id, ep.id).key
    check(secret.startswith("whsec_"), "the endpoint's secret")

    # Tenant isolation: another tenant's token sees and uses nothing of it.
    refused(404, lambda: other.application.get(app.id), "another tenant reading the app")
    refused(404, lambda: other.endpoint.list(app.id), "another tenant listing its endpoints")
    refused(404, lambda: other.endpoint.get_secret(app.id, ep.id), "another tenant's secret read")
    refused(404, lambda: other.message.create(app.id, MessageIn(event_type=signup, payload={})),
            "another tenant sending to the app")
    check(all(a.id != app.id for a in other.application.list().data), "another tenant's list")

    # Messages: in the application's order (the default ordering key)...
    sent = []
    for n in range(MESSAGES):
        payload = {"n": n, "user": {"id": f"u{n}", "amount": 1.10}}
        msg = svix.message.create(
            app.id,
            MessageIn(event_type=signup if n % 2 == 0 else deleted, payload=payload,
                      event_id=f"evt-{run}-{n}"),
        )
        check(msg.id.startswith("msg_") and msg.event_id == f"evt-{run}-{n}", f"message: {msg}")
        sent.append((msg, payload))
    refused(409, lambda: svix.message.create(
        app.id, MessageIn(event_type=signup, payload={}, event_id=f"evt-{run}-0")),
        "a repeated eventId")
    # ...and on finer keys, through the `orderingKey` extension (raw HTTP: the SDK's model
    # has no such field).
    keyed = []
    with httpx.Client() as http:
        for i in range(PER_KEY):
            for key in KEYS:
                r = http.post(f"{API}/api/v1/app/{app.id}/msg",
                              headers={"authorization": f"Bearer {TOKEN}"},
                              json={"eventType": signup, "payload": {"key": key, "i": i},
                                    "orderingKey": key})
                check(r.status_code == 202, f"keyed message: {r.status_code} {r.text}")
                keyed.append(r.json()["id"])
    total = MESSAGES + len(keyed)

    got = wait_for(f"{total} deliveries", lambda: len(receiver.received()) >= total
                   and receiver.received())
    check(len(got) == total, f"{len(got)} deliveries for {total} messages")
    by_id = {}
    for at, h, body in got:
        Webhook(secret).verify(body, h)  # raises on a bad signature
        check(h.get("x-api-key") == "k-123", "the custom header reaches the receiver")
        check(h.get("content-type", "").startswith("application/json"), "content-type")
        by_id[h["svix-id"]] = (at, json.loads(body))
    for msg, payload in sent:
        check(msg.id in by_id, f"{msg.id} not delivered")
        check(by_id[msg.id][1] == payload, f"the body is the payload: {by_id[msg.id][1]}")
    # Per-key order: the application's messages in the order accepted; each key's in its own.
    arrivals = [b["n"] for _, h, b in ((a, h, json.loads(body)) for a, h, body in got) if "n" in b]
    check(arrivals == sorted(arrivals), f"the application's order: {arrivals}")
    for key in KEYS:
        seq = [json.loads(body)["i"] for _, _, body in got if json.loads(body).get("key") == key]
        check(seq == list(range(PER_KEY)), f"order of {key}: {seq}")
    # The rate limit: about RATE deliveries a second, never a burst of more.
    times = sorted(at for at, _, _ in got)
    span = times[-1] - times[0]
    check(span >= (total - 1) / RATE * 0.8, f"{total} deliveries in {span:.2f} s at {RATE}/s")
    busiest = max(sum(1 for t in times if s <= t < s + 1.0) for s in times)
    check(busiest <= RATE + 3, f"{busiest} deliveries in one second at {RATE}/s")

    # Messages read back: newest first, page by page, by id and by eventId.
    seen, it = [], None
    while True:
        page = svix.message.list(app.id, MessageListOptions(limit=7, iterator=it))
        seen.extend(m.id for m in page.data)
        if page.done:
            break
        it = page.iterator
    check(seen == sorted(seen, reverse=True) and len(seen) == total, f"message list: {seen}")
    one = svix.message.get(app.id, sent[3][0].id, MessageGetOptions(with_content=True))
    check(one.payload == sent[3][1] and one.event_type == deleted, f"message get: {one}")
    check(svix.message.get(app.id, f"evt-{run}-3").id == sent[3][0].id, "a message by eventId")

    # Attempts, from the operations index: each message's one successful attempt.
    first = sent[3][0]

    def succeeded_attempts():
        page = svix.message_attempt.list_by_msg(app.id, first.id)
        return [a for a in page.data if a.status == MessageStatus.SUCCESS]

    attempt = wait_for("the message's attempt", succeeded_attempts)[0]
    check(attempt.id.startswith("atmpt_") and attempt.msg_id == first.id
          and attempt.endpoint_id == ep.id and attempt.url == receiver.url
          and attempt.response_status_code == 200
          and attempt.trigger_type == MessageAttemptTriggerType.SCHEDULED, f"attempt: {attempt}")
    check(svix.message_attempt.get(app.id, first.id, attempt.id).id == attempt.id,
          "an attempt by its id")
    want = {m.id for m, _ in sent} | set(keyed)

    def attempted_by_endpoint():
        ids, it = set(), None
        while True:
            page = svix.message_attempt.list_by_endpoint(
                app.id, ep.id,
                MessageAttemptListByEndpointOptions(limit=250, iterator=it,
                                                    status=MessageStatus.SUCCESS))
            ids.update(a.msg_id for a in page.data)
            if page.done:
                return ids >= want
            it = page.iterator

    wait_for("every message's attempt, listed by endpoint", attempted_by_endpoint)

    def destinations(m, status):
        d = svix.message_attempt.list_attempted_destinations(app.id, m.id).data
        return len(d) == 1 and d[0].id == ep.id and d[0].status == status and d

    wait_for("the message's state at its endpoint",
             lambda: destinations(first, MessageStatus.SUCCESS))
    refused(404, lambda: other.message_attempt.list_by_msg(app.id, first.id),
            "another tenant listing the attempts")

    # Rotation with no grace: later deliveries verify with the new secret only.
    rotated = svix.endpoint.rotate_secret(app.id, ep.id,
                                          EndpointSecretRotateIn(grace_period_seconds=0))
    new = svix.endpoint.get_secret(app.id, ep.id).key
    check(new != secret and rotated.key == new, "rotation gives a new secret")
    before = len(receiver.received())
    after_rotation = [svix.message.create(app.id, MessageIn(event_type=signup, payload={"late": k}))
                      for k in range(3)]
    later = wait_for("deliveries after the rotation",
                     lambda: len(receiver.received()) >= before + 3 and receiver.received()[before:])
    check(len(later) == 3, f"{len(later)} deliveries after the rotation")
    for _, h, body in later:
        Webhook(new).verify(body, h)
        try:
            Webhook(secret).verify(body, h)
            fail("a delivery after the rotation verifies with the old secret")
        except WebhookVerificationError:
            pass
    check({h["svix-id"] for _, h, _ in later} == {m.id for m in after_rotation}, "svix-id")

    # What Hookline cannot do says why, in Svix's shape: a configured token is no session,
    # and Kafka's log keeps a payload until its retention.
    e = refused(409, lambda: svix.authentication.logout(), "logout")
    check(e.code == "token_not_revocable", f"logout code: {e.code}")
    check(svix.application.get(app.id).id == app.id, "the token still works")
    e = refused(409, lambda: svix.message.expunge_content(app.id, sent[0][0].id), "expunge")
    check(e.code == "content_immutable", f"expunge code: {e.code}")
    kept = svix.message.get(app.id, sent[0][0].id, MessageGetOptions(with_content=True))
    check(kept.payload == sent[0][1], f"the payload is kept: {kept}")

    def delivered(svix_id):
        return [(h, body) for _, h, body in receiver.received() if h["svix-id"] == svix_id]

    # Resend: the message once more, with its own id.
    svix.message_attempt.resend(app.id, first.id, ep.id)
    again = wait_for("the resent message", lambda: len(delivered(first.id)) >= 2 and delivered(first.id))
    Webhook(new).verify(again[-1][1], again[-1][0])
    check(json.loads(again[-1][1]) == sent[3][1], "the resent body is the payload")

    # Send an example: the event type's schema example, to this endpoint.
    ex = svix.endpoint.send_example(app.id, ep.id, EventExampleIn(event_type=signup))
    check(ex.id.startswith("msg_") and ex.payload == example, f"example: {ex}")
    got_ex = wait_for("the example", lambda: delivered(ex.id))
    Webhook(new).verify(got_ex[0][1], got_ex[0][0])
    check(json.loads(got_ex[0][1]) == example, "the example's body")

    # The receiver fails: each message is tried on the stack's schedule, then dead-lettered;
    # recover sends the endpoint's failed messages again, in their order.
    since = datetime.now(timezone.utc) - timedelta(seconds=5)
    receiver.fail(True)
    failed = [svix.message.create(app.id, MessageIn(event_type=signup, payload={"lost": k}))
              for k in range(FAILED)]
    wait_for("the failed messages dead-lettered",
             lambda: all(destinations(m, MessageStatus.FAIL) for m in failed))
    fails = svix.message_attempt.list_by_msg(
        app.id, failed[0].id, MessageAttemptListByMsgOptions(status=MessageStatus.FAIL)).data
    check(fails and all(a.response_status_code == 503 for a in fails), f"failed attempts: {fails}")
    check(not any(h["svix-id"] in {m.id for m in failed} for _, h, _ in receiver.received()),
          "nothing answered 200 while failing")
    at_endpoint = svix.message_attempt.list_attempted_messages(
        app.id, ep.id, MessageAttemptListAttemptedMessagesOptions(status=MessageStatus.FAIL,
                                                                  with_content=True)).data
    check(sorted((m.id, m.payload["lost"]) for m in at_endpoint)
          == sorted((m.id, k) for k, m in enumerate(failed)),
          f"the endpoint's failed messages: {at_endpoint}")
    receiver.fail(False)
    task = svix.endpoint.recover(app.id, ep.id, RecoverIn(since=since))
    check(task.status == BackgroundTaskStatus.RUNNING and task.task == "endpoint.recover",
          f"recover: {task}")
    ids = [m.id for m in failed]
    recovered = wait_for("the recovered messages",
                         lambda: all(delivered(i) for i in ids) and
                         [(h, b) for _, h, b in receiver.received() if h["svix-id"] in ids])
    check([h["svix-id"] for h, _ in recovered] == ids, "recovered once each, in their order")
    for h, body in recovered:
        Webhook(new).verify(body, h)
    manual = wait_for("the recovered attempt", lambda: [
        a for a in svix.message_attempt.list_by_msg(app.id, failed[0].id).data
        if a.status == MessageStatus.SUCCESS])
    check(manual[0].trigger_type == MessageAttemptTriggerType.MANUAL, f"trigger: {manual[0]}")
    wait_for("the recovered message's state",
             lambda: destinations(failed[0], MessageStatus.SUCCESS))

    def attempted_messages():
        ids, it = [], None
        while True:
            page = svix.message_attempt.list_attempted_messages(
                app.id, ep.id, MessageAttemptListAttemptedMessagesOptions(limit=100, iterator=it))
            ids.extend(m.id for m in page.data if m.status == MessageStatus.SUCCESS)
            if page.done:
                return ids
            it = page.iterator

    walked = wait_for("every message succeeded at the endpoint",
                      lambda: (lambda ids: len(set(ids)) >= len(want) + len(failed) + 4 and ids)(
                          attempted_messages()))
    check(set(walked) >= want | {m.id for m in failed} | {ex.id},
          "every message is listed at the endpoint")

    # Not served yet: a clear error in Svix's shape, not a hang or a crash.
    e = refused(501, lambda: svix.endpoint.get_stats(app.id, ep.id), "endpoint stats")
    check(e.code == "not_implemented", f"501 code: {e.code}")

    # Delete: the endpoint, then the application (another tenant cannot).
    refused(404, lambda: other.application.delete(app.id), "another tenant deleting the app")
    svix.endpoint.delete(app.id, ep.id)
    refused(404, lambda: svix.endpoint.get(app.id, ep.id), "a deleted endpoint")
    svix.application.delete(app.id)
    refused(404, lambda: svix.application.get(app.id), "a deleted application")
    for name in (signup, deleted):
        admin.event_type.delete(name)
    print(f"svix sdk flow: ok ({total + 5 + FAILED} deliveries verified, "
          f"{span:.2f} s at {RATE}/s)")


if __name__ == "__main__":
    main()
