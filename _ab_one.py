import asyncio, json, sys
from bench.common import stack
from bench.overhead import measure
from bench.added_latency import worker_added_latency, relay_added_latency

async def main():
    out = {}
    async with stack(latency_ms=0) as st:
        [rates] = await measure(st, 20_000, 256, 1)
        out["a_headway"], out["a_relay"], out["a_ratio"] = rates.headway, rates.other, rates.ratio
    async with stack(latency_ms=0) as st:
        added = await worker_added_latency(st)
        relayed = await relay_added_latency(st)
        out["j_p50_ms"], out["j_p99_ms"] = added.p50_ms, added.p99_ms
        out["relay_p50_ms"], out["relay_p99_ms"] = relayed.p50_ms, relayed.p99_ms
    print("RESULT " + json.dumps(out), flush=True)

asyncio.run(main())
