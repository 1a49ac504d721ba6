#!/usr/bin/env python3
"""The freshness benchmark's reference: a consumer that does nothing with what it reads.

Reads TOPIC with a group of its own from the end (librdkafka through confluent-kafka, its
defaults), and for every message writes one CSV row: partition, offset, the message timestamp
(ms; the broker's append with a LogAppendTime topic), the time librdkafka handed it over (unix
s), and the probe id when the message is one of the harness's JSON probes. It shows how late
messages reach any consumer process on this machine, strata or not: the floor under the
ingest node's apply lag and the strong search's freshness.

    plain_consumer.py BROKERS TOPIC OUT.csv READY_FILE
READY_FILE is created once the partitions are assigned and their end offsets fetched; SIGTERM
ends it, the CSV flushed.
"""
import csv
import re
import signal
import sys
import time

from confluent_kafka import OFFSET_END, Consumer

PROBE = re.compile(rb'"id":"(probe-[0-9]+)"')


def main():
    brokers, topic, out, ready = sys.argv[1:5]
    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    c = Consumer({"bootstrap.servers": brokers, "group.id": f"fresh-plain-{time.time_ns()}",
                  "enable.auto.commit": False, "auto.offset.reset": "latest"})

    def on_assign(cons, parts):
        for p in parts:
            p.offset = OFFSET_END
        cons.assign(parts)
        open(ready, "w").close()
    c.subscribe([topic], on_assign=on_assign)
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["partition", "offset", "timestamp_ms", "received_unix_s", "probe"])
        while not stop[0]:
            m = c.poll(0.1)
            if m is None or m.error() is not None:
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
