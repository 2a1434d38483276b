"""Publishes one JSON event over SASL_SSL as the outside producer's own principal, with a
client that is not Hookline's code: Python's confluent-kafka (its wheel ships librdkafka with
TLS and SASL).

Usage: producer.py BOOTSTRAP CA_FILE MECHANISM USERNAME PASSWORD_FILE TOPIC KEY PAYLOAD
"""

import sys

from confluent_kafka import Producer


def main():
    bootstrap, ca_file, mechanism, username, password_file, topic, key, payload = sys.argv[1:]
    with open(password_file, encoding="utf-8") as f:
        password = f.read().strip()
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": mechanism,
            "sasl.username": username,
            "sasl.password": password,
            "ssl.ca.location": ca_file,
            "acks": "all",
        }
    )
    failed = []

    def acked(err, _msg):
        if err is not None:
            failed.append(str(err))

    producer.produce(topic, key=key.encode(), value=payload.encode(), on_delivery=acked)
    if producer.flush(60) != 0:
        sys.exit("not acknowledged within 60 s")
    if failed:
        sys.exit(f"refused: {failed[0]}")


if __name__ == "__main__":
    main()
