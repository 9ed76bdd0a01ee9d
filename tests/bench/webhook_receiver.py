#!/usr/bin/env python3
"""A fast webhook receiver for tests/bench/pipeline.sh --webhook: answers every POST 204 at
once on HTTP/1.1 keep-alive connections (asyncio, a minimal parser: the receiver must not
be what limits the sender), and writes, every 100 ms:

- COUNT_FILE: the number of events received so far;
- COUNT_FILE.lat: `events requests connections p50_ms p99_ms max_ms` of the event-to-arrival
  latency: arrival time here minus each event's `at_ms` (when Sluice wrote the event, in
  the transaction of the state change) — the whole way through the sequencer round, the
  webhook loop and the request, on one machine's clock.

    webhook_receiver.py PORT COUNT_FILE
"""
import asyncio
import json
import sys
import time

port, out = int(sys.argv[1]), sys.argv[2]
latencies = []
state = {"events": 0, "requests": 0, "connections": 0, "written": -1}
ANSWER = b"HTTP/1.1 204 No Content\r\n\r\n"


class Receiver(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""
        state["connections"] += 1

    def data_received(self, data):
        now_ms = time.time() * 1000.0
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buf[:end].lower()
            at = head.find(b"content-length:")
            length = 0
            if at >= 0:
                stop = head.find(b"\r\n", at)
                length = int(head[at + 15:stop if stop >= 0 else len(head)].strip())
            if len(self.buf) < end + 4 + length:
                return
            body = self.buf[end + 4:end + 4 + length]
            self.buf = self.buf[end + 4 + length:]
            self.transport.write(ANSWER)
            events = json.loads(body).get("events", [])
            state["requests"] += 1
            state["events"] += len(events)
            for e in events:
                latencies.append(now_ms - e["at_ms"])


def percentile(sorted_values, p):
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, round((len(sorted_values) - 1) * p))]


async def report():
    while True:
        await asyncio.sleep(0.1)
        if state["written"] == state["events"]:
            continue
        state["written"] = state["events"]
        with open(out, "w") as f:
            f.write(str(state["events"]))
        lat = sorted(latencies)
        with open(out + ".lat", "w") as f:
            f.write("%d %d %d %.1f %.1f %.1f\n" % (
                state["events"], state["requests"], state["connections"],
                percentile(lat, 0.5), percentile(lat, 0.99), lat[-1] if lat else 0.0))


async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Receiver, "127.0.0.1", port, backlog=1024)
    asyncio.create_task(report())
    async with server:
        await server.serve_forever()


asyncio.run(main())
