"""The bare pipeline's three transactional hops with confluent-kafka (librdkafka), measured at a rate.

    python loadtest/experiments/librdkafka_hop.py RATE SECONDS     # driver: topics, 3 hops, load, report
    python loadtest/experiments/librdkafka_hop.py --hop SRC DST GROUP TXID   # one hop (the driver starts them)

Each hop: poll what is there (up to 500), then one transaction with the records passed on and
the offsets sent with the consumer's group metadata (KIP-447), as TransactionalStage does with
aiokafka. The driver publishes at RATE (the value is the send time), reads the last topic
read_committed and prints latency percentiles and the CPU seconds of the hops and of Kafka.
Needs confluent-kafka and psutil (not project dependencies; see README.md here).
"""

import subprocess
import sys
import threading
import time
import uuid

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

BOOT = "127.0.0.1:19092"
COMMON = {"bootstrap.servers": BOOT, "socket.nagle.disable": True}  # Nagle on loopback adds ~40 ms


def hop(src: str, dst: str, group: str, txid: str) -> None:
    consumer = Consumer(COMMON | {"group.id": group, "enable.auto.commit": False, "auto.offset.reset": "earliest",
                                  "isolation.level": "read_committed", "fetch.wait.max.ms": 200})
    producer = Producer(COMMON | {"transactional.id": txid, "linger.ms": 0, "enable.idempotence": True})
    producer.init_transactions()
    consumer.subscribe([src])
    while True:
        first = consumer.poll(0.5)
        if first is None or first.error() is not None:
            continue
        msgs = [first] + [m for m in consumer.consume(num_messages=499, timeout=0) if m.error() is None]
        producer.begin_transaction()
        offsets: dict[tuple[str, int], int] = {}
        for m in msgs:
            producer.produce(dst, m.value(), key=m.key())
            offsets[(m.topic(), m.partition())] = m.offset() + 1
        producer.send_offsets_to_transaction([TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                                             consumer.consumer_group_metadata())
        producer.commit_transaction()


def drive(rate: float, seconds: float) -> None:
    ns = "rdk" + uuid.uuid4().hex[:6]
    topics = [f"{ns}.t{i}" for i in range(4)]
    admin = AdminClient({"bootstrap.servers": BOOT})
    for f in admin.create_topics([NewTopic(t, 6, 1) for t in topics]).values():
        f.result()
    hops = [subprocess.Popen([sys.executable, __file__, "--hop", topics[i], topics[i + 1], f"{ns}.g{i}", f"{ns}.tx{i}"])
            for i in range(3)]
    latencies: list[float] = []
    done = threading.Event()

    def read() -> None:
        c = Consumer(COMMON | {"group.id": ns + ".reader", "auto.offset.reset": "earliest",
                               "isolation.level": "read_committed", "fetch.wait.max.ms": 100})
        c.subscribe([topics[3]])
        while not done.is_set():
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                latencies.append(time.time() * 1000 - float(m.value()))
        c.close()

    try:
        time.sleep(6)
        reader = threading.Thread(target=read)
        reader.start()
        producer = Producer(COMMON | {"linger.ms": 0, "acks": "all"})
        kafka = next(p for p in psutil.process_iter(["cmdline"]) if "kafka.Kafka" in " ".join(p.info["cmdline"] or []))
        watched = [psutil.Process(h.pid) for h in hops] + [kafka]

        def cpu() -> list[float]:
            return [sum(w.cpu_times()[:2]) for w in watched]

        for i in range(200):  # warm-up
            producer.produce(topics[0], str(time.time() * 1000).encode(), key=str(i).encode())
            producer.poll(0)
            time.sleep(0.01)
        time.sleep(3)
        latencies.clear()
        before, t0, n = cpu(), time.time(), int(rate * seconds)
        for i in range(n):
            pause = t0 + i / rate - time.time()
            if pause > 0:
                time.sleep(pause)
            producer.produce(topics[0], str(time.time() * 1000).encode(), key=str(i).encode())
            producer.poll(0)
        producer.flush()
        time.sleep(3)
        after = cpu()
        done.set()
        reader.join()
    finally:
        for h in hops:
            h.kill()
        for f in admin.delete_topics(topics).values():
            f.result()
    latencies.sort()

    def q(x: float) -> float:
        return latencies[min(len(latencies) - 1, int(x * len(latencies)))]

    used = [round(b - a, 1) for a, b in zip(before, after, strict=True)]
    print(f"{len(latencies)}/{n} answers; p50 {q(.5):.1f} p95 {q(.95):.1f} p99 {q(.99):.1f} max {latencies[-1]:.1f} ms; "
          f"CPU s: hops {used[:3]}, kafka {used[3]} over {seconds + 3:.0f} s")


if __name__ == "__main__":
    if sys.argv[1] == "--hop":
        hop(*sys.argv[2:6])
    else:
        drive(float(sys.argv[1]), float(sys.argv[2]))
