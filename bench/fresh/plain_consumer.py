#!/usr/bin/env python3
"""The freshness benchmark's reference: a consumer that does nothing with what it reads.

Reads every partition of TOPIC from its end at start-up (absolute offsets, no consumer group:
nothing can move it back or forward later), librdkafka's defaults through confluent-kafka, and
for every message writes one CSV row: partition, offset, the message timestamp (ms; the
broker's append with a LogAppendTime topic), the time librdkafka handed it over (unix s), and
the probe id when the message is one of the harness's JSON probes. It shows how late messages
reach any consumer process on this machine, strata or not: the floor under the ingest node's
apply lag and the strong search's freshness.

    plain_consumer.py BROKERS TOPIC OUT.csv READY_FILE
READY_FILE is created once every partition is assigned at its high watermark, so that every
message produced after it is read. Consumer errors go to stderr; SIGTERM ends it, the CSV
flushed.
"""
import csv
import re
import signal
import sys
import time

from confluent_kafka import Consumer, TopicPartition

PROBE = re.compile(rb'"id":"(probe-[0-9]+)"')


def main():
    brokers, topic, out, ready = sys.argv[1:5]
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    # group.id only because the client wants one: assign() joins no group, commits nothing
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"fresh-plain-{time.time_ns()}",
                  "enable.auto.commit": False})
    md = c.list_topics(topic, timeout=30).topics[topic]
    if md.error is not None or not md.partitions:
        sys.exit(f"plain_consumer: topic {topic}: {md.error or 'no partitions'}")
    parts = []
    for p in sorted(md.partitions):
        _, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
        parts.append(TopicPartition(topic, p, hi))
    c.assign(parts)
    open(ready, "w").close()
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["partition", "offset", "timestamp_ms", "received_unix_s", "probe"])
        f.flush()
        while not stop[0]:
            m = c.poll(0.1)
            if m is None:
                continue
            if m.error() is not None:
                print(f"plain_consumer: {m.error()}", file=sys.stderr, flush=True)
                continue
            now = time.time()
            v = m.value() or b""
            pm = PROBE.search(v[:200]) if v[:1] == b"{" else None
            w.writerow([m.partition(), m.offset(), m.timestamp()[1], f"{now:.4f}",
                        pm.group(1).decode() if pm else ""])
            f.flush()  # read while it runs, a phase at a time
    c.close()


if __name__ == "__main__":
    main()
