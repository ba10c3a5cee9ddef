// B11's instrument: a streaming Messages API upstream and its load generator, in Node.
//
// The figure is a difference of a few milliseconds between two paths to the same server; an
// instrument written in Python (an aiohttp client, an asyncio server) spends more CPU per
// event than the gateway does, and its own loop lag (3-7 ms at the median with 100 streams,
// changing from run to run) hides what is measured. Node's HTTP stack (llhttp, libuv)
// costs a fraction of that, so what remains is the gateway's.
//
//   node bench/wire.mjs serve EVENTS LATENCY TRICKLE
//       Answer every POST with the SSE events in the JSON file EVENTS ([[name, data], ...],
//       the fake API's own, written by the bench): headers after LATENCY seconds, then one
//       event every TRICKLE seconds (event n at n * TRICKLE after the headers, so streams
//       keep the phases they started with); the last event ends with the comment ": served S", the
//       seconds from the request's arrival (its body read) to that write. Prints
//       "listening URL".
//
//   node bench/wire.mjs load REQUESTS STAGGER URL TOKENS CLIENTS [URL TOKENS CLIENTS ...]
//       For every group, CLIENTS clients at once (their first requests spread evenly over
//       STAGGER seconds), each sending REQUESTS streamed requests one after another, each
//       client with its own key from the file TOKENS (one a line, reused round-robin).
//       Prints one JSON list, one object per group, as bench/loadgen.py does: the wall time
//       and each request's latency (sent to last byte), time to first byte, the served
//       stamp (NaN when absent: null in JSON) and which of its client's requests it was.
import http from "node:http";
import fs from "node:fs";

const now = () => Number(process.hrtime.bigint()) / 1e9;
const [mode, ...args] = process.argv.slice(2);

function serve([eventsFile, latency, trickle]) {
  const events = JSON.parse(fs.readFileSync(eventsFile, "utf8")).map(
    ([name, data]) => `event: ${name}\ndata: ${JSON.stringify(data)}\n\n`,
  );
  let served = 0;
  const server = http.createServer({ noDelay: true }, (req, res) => {
    req.resume();
    req.on("end", () => {
      const arrived = now(); // the whole request is in, as the fake API counts it
      setTimeout(() => {
        res.writeHead(200, {
          "content-type": "text/event-stream; charset=utf-8",
          "cache-control": "no-cache",
          "request-id": `req_wire${(served++).toString().padStart(6, "0")}`,
        });
        res.flushHeaders();
        // Each event at its own time from this stream's start, not TRICKLE after the one
        // before: chained timers take their start from the loop's cached clock, so one late
        // turn of this loop would merge the streams it delayed into a clump for good.
        const begun = now();
        let n = 0;
        const next = () => {
          let payload = events[n];
          if (n === events.length - 1) {
            payload += `: served ${(now() - arrived).toFixed(6)}\n\n`;
          }
          res.write(payload);
          n += 1;
          if (n < events.length) {
            setTimeout(next, Math.max(0, begun + n * Number(trickle) - now()) * 1000);
          }
          else res.end();
        };
        next();
      }, Number(latency) * 1000);
    });
  });
  server.keepAliveTimeout = 60000;

  server.listen(0, "127.0.0.1", () => {
    console.log(`listening http://127.0.0.1:${server.address().port}`);
  });
  process.on("SIGTERM", () => process.exit(0));
}

const BODY = JSON.stringify({
  model: "claude-sonnet-4-6",
  max_tokens: 256,
  stream: true,
  messages: [{ role: "user", content: "Say something short." }],
});

function one(agent, url, key) {
  return new Promise((resolve, reject) => {
    const sent = now();
    let first = 0;
    let tail = "";
    const req = http.request(
      url + "/v1/messages",
      {
        method: "POST",
        agent,
        headers: {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(BODY),
          "x-api-key": key,
          "anthropic-version": "2023-06-01",
        },
      },
      (res) => {
        res.setEncoding("latin1");
        res.on("data", (chunk) => {
          if (!first) first = now();
          tail = (tail + chunk).slice(-200);
        });
        res.on("end", () => {
          const done = now();
          if (res.statusCode !== 200) return reject(new Error(`HTTP ${res.statusCode}`));
          const at = tail.lastIndexOf(": served ");
          const stamp = at < 0 ? NaN : Number(tail.slice(at + 9).split("\n", 1)[0]);
          resolve([done - sent, (first || done) - sent, stamp]);
        });
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.setNoDelay(true); // as aiohttp, undici and the SDKs' clients do
    req.end(BODY);
  });
}

async function load([requests, stagger, ...rest]) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: Infinity });
  const groups = [];
  for (let i = 0; i < rest.length; i += 3) {
    const keys = fs.readFileSync(rest[i + 1], "utf8").split(/\s+/).filter(Boolean);
    groups.push({ url: rest[i], keys, clients: Number(rest[i + 2]) });
  }
  const sleep = (s) => new Promise((r) => setTimeout(r, s * 1000));
  const results = await Promise.all(
    groups.map(async ({ url, keys, clients }) => {
      const samples = [];
      const start = now();
      await Promise.all(
        Array.from({ length: clients }, async (_, n) => {
          await sleep((Number(stagger) * n) / clients);
          for (let r = 0; r < Number(requests); r++) {
            samples.push([...(await one(agent, url, keys[n % keys.length])), r]);
          }
        }),
      );
      return {
        wall: now() - start,
        latency: samples.map((s) => s[0]),
        first_byte: samples.map((s) => s[1]),
        served: samples.map((s) => s[2]),
        turn: samples.map((s) => s[3]),
      };
    }),
  );
  process.stdout.write(JSON.stringify(results) + "\n");
  agent.destroy();
}

if (mode === "serve") serve(args);
else if (mode === "load") await load(args);
else {
  console.error("usage: node bench/wire.mjs serve|load ...");
  process.exit(2);
}
