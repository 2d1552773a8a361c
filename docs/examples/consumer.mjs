// A pollhook webhook consumer (Node.js, no framework): verify, then deduplicate, then order.
//
//   npm install standardwebhooks@1.1.1
//   POLLHOOK_WEBHOOK_SECRET=whsec_... PORT=9000 node consumer.mjs
import http from "node:http";
import { Webhook } from "standardwebhooks";

const webhook = new Webhook(process.env.POLLHOOK_WEBHOOK_SECRET);
const seenIds = new Set(); // in production: a table with a unique key on webhook-id
const lastSequence = new Map(); // task id -> the highest sequence applied

function handle(type, task) {
  console.log(type, task.id, task.status);
}

const server = http.createServer((req, res) => {
  if (req.method !== "POST" || req.url !== "/hooks/pollhook") {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const body = Buffer.concat(chunks).toString("utf8"); // the raw body, exactly as sent
    let event;
    try {
      event = webhook.verify(body, req.headers); // the signature, and a timestamp ±5 min
    } catch {
      res.writeHead(400).end();
      return;
    }
    const eventId = req.headers["webhook-id"]; // the same on every retry of one event
    if (!seenIds.has(eventId)) {
      const task = event.data;
      if (task.sequence > (lastSequence.get(task.id) ?? -1)) { // drop stale events
        lastSequence.set(task.id, task.sequence);
        handle(event.type, task);
      }
      seenIds.add(eventId);
    }
    res.writeHead(204).end(); // any 2xx within 15 s; anything else is retried
  });
});
server.listen(Number(process.env.PORT ?? 9000), "127.0.0.1");
