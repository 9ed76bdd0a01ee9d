#!/usr/bin/env python3
"""Many Server-Sent Events subscribers on one Sluice node, for tests/bench/sse_subscribers.sh.

Opens SUBSCRIBERS connections to `GET /v1/events/stream` (loopback only; at most
--connect-batch connects at a time; every socket bounded by --timeout), writes READY_FILE
(how many are streaming) once all have answered, then records for every event that
reaches every subscriber its latency: arrival here minus the event's `at_ms` (when Sluice
wrote it, in the transaction of the state change; one machine's clock). When STOP_FILE
appears it waits (at most 30 s) until every subscriber has as many events as the one with
the most, and writes OUT_FILE:

    subscribers streaming refused complete events p50_ms p99_ms max_ms

`complete`: subscribers that got every event the busiest one got (all of them, when the
fan-out lost nothing).

    sse_subscribers.py --port P --key K --subscribers N --ready F --stop F --out F
"""
import argparse
import asyncio
import os
import resource
import time

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--key", required=True)
p.add_argument("--subscribers", type=int, required=True)
p.add_argument("--ready", required=True)
p.add_argument("--stop", required=True)
p.add_argument("--out", required=True)
p.add_argument("--connect-batch", type=int, default=500)
p.add_argument("--timeout", type=float, default=600.0)
args = p.parse_args()

soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = min(hard, args.subscribers + 1024)
if soft < want:
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

latencies = []
counts = []
state = {"streaming": 0, "refused": 0}
REQUEST = (
    "GET /v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
    "Accept: text/event-stream\r\n\r\n" % args.key
).encode()
AT = b'"at_ms":'


class Subscriber(asyncio.Protocol):
    def __init__(self, index, answered):
        self.index = index
        self.answered = answered
        self.buf = b""
        self.head_done = False

    def connection_made(self, transport):
        self.transport = transport
        transport.write(REQUEST)

    def data_received(self, data):
        now_ms = time.time() * 1000.0
        self.buf += data
        if not self.head_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            ok = self.buf.startswith(b"HTTP/1.1 200")
            self.head_done = True
            self.buf = self.buf[end + 4:]
            if not self.answered.done():
                self.answered.set_result(ok)
            if not ok:
                self.transport.close()
                return
        # Events are "\n\n"-terminated blocks (chunk framing lines fall between them).
        while True:
            end = self.buf.find(b"\n\n")
            if end < 0:
                return
            block = self.buf[:end]
            self.buf = self.buf[end + 2:]
            at = block.find(AT)
            if at < 0:
                continue  # a heartbeat
            stop = at + len(AT)
            while stop < len(block) and block[stop:stop + 1].isdigit():
                stop += 1
            latencies.append(now_ms - int(block[at + len(AT):stop]))
            counts[self.index] += 1

    def connection_lost(self, exc):
        if not self.answered.done():
            self.answered.set_result(False)


def percentile(sorted_values, q):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, round((len(sorted_values) - 1) * q))]


async def main():
    loop = asyncio.get_running_loop()
    transports = []
    n = args.subscribers
    counts.extend([0] * n)
    for start in range(0, n, args.connect_batch):
        batch = []
        for i in range(start, min(n, start + args.connect_batch)):
            answered = loop.create_future()
            batch.append(answered)
            t, _ = await loop.create_connection(
                lambda i=i, a=answered: Subscriber(i, a), "127.0.0.1", args.port)
            transports.append(t)
        for ok in await asyncio.wait_for(asyncio.gather(*batch), args.timeout):
            if ok:
                state["streaming"] += 1
            else:
                state["refused"] += 1
    with open(args.ready, "w") as f:
        f.write("%d %d\n" % (state["streaming"], state["refused"]))
    deadline = time.monotonic() + args.timeout
    while not os.path.exists(args.stop) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    settle = time.monotonic() + 30
    while time.monotonic() < settle:
        most = max(counts) if counts else 0
        if all(c == most for c in counts):
            break
        await asyncio.sleep(0.2)
    most = max(counts) if counts else 0
    lat = sorted(latencies)
    with open(args.out, "w") as f:
        f.write("%d %d %d %d %d %.1f %.1f %.1f\n" % (
            n, state["streaming"], state["refused"], sum(1 for c in counts if c == most),
            len(lat), percentile(lat, 0.5), percentile(lat, 0.99), lat[-1] if lat else 0.0))
    for t in transports:
        t.close()


asyncio.run(main())
