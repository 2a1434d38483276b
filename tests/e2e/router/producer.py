"""Publishes two events to Hookline's events topic the way any outside producer would.

Usage: producer.py BOOTSTRAP TOPIC TENANT

One JSON event (no content-type header: JSON is the default) and one protobuf
`hookline.v1.Event` with `content-type: application/x-protobuf`. The protobuf bytes are
encoded here by hand from proto/hookline/v1/event.proto, so nothing of Hookline's own code
takes part.
"""

import json
import sys

from confluent_kafka import Producer


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(number, payload):
    """A length-delimited field (wire type 2): strings and embedded messages."""
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(number << 3 | 2) + varint(len(payload)) + payload


def event_proto(id, type, time, tenant, metadata, data_json):
    out = field(1, id) + field(2, type) + field(3, time) + field(4, tenant)
    for k, v in metadata.items():  # map<string, string> = repeated entry {1: key, 2: value}
        out += field(5, field(1, k) + field(2, v))
    return out + field(6, data_json)


def main():
    bootstrap, topic, tenant = sys.argv[1:4]
    producer = Producer({"bootstrap.servers": bootstrap, "acks": "all"})
    failures = []

    def report(err, msg):
        if err is not None:
            failures.append(err)

    json_event = (
        '{"id": "py-json-1", "type": "ORDER.CREATED", "time": "2026-04-14T09:54:45.040Z", '
        '"tenant": %s, "metadata": {"source": "python"}, '
        '"data": {"order": "o-1", "amount": 12.50}}' % json.dumps(tenant)
    )
    producer.produce(topic, key=b"o-1", value=json_event.encode(), on_delivery=report)
    proto_event = event_proto(
        "py-proto-1",
        "ORDER.ITEM.SHIPPED",
        "2026-04-14T09:54:46.000Z",
        tenant,
        {"source": "python"},
        '{"order": "o-1", "item": 2}',
    )
    producer.produce(
        topic,
        key=b"o-1",
        value=proto_event,
        headers=[("content-type", b"application/x-protobuf")],
        on_delivery=report,
    )
    remaining = producer.flush(30)
    if remaining or failures:
        sys.exit(f"not delivered: {remaining} pending, errors {failures}")


if __name__ == "__main__":
    main()
