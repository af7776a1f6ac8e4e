// @ts-check
// A jetflow handler written as a NATS service in TypeScript/JavaScript (npm @nats-io/services
// on @nats-io/transport-node): it answers the shout node of examples/shout.yaml on svc.shout
// with the run input's text in capitals, as examples/services/go does in Go. No jetflow SDK:
// the step arrives as a NATS request, the reply is the node's output, an error reply's code
// says whether jetflow retries (5xx) or sends the step to the DLQ (4xx).
//
//   go run ./cmd/jetflow dev                               # terminal 1
//   cd examples/services/ts && npm ci && node service.js   # terminal 2 (NATS_URL, default nats://127.0.0.1:4222)
//   go run ./cmd/jetflow start shout --input '{"text": "hello"}' --wait
import { connect } from "@nats-io/transport-node";
import { Svcm } from "@nats-io/services";

const url = process.env.NATS_URL || "nats://127.0.0.1:4222";
const nc = await connect({ servers: url.split(",") });
const svc = await new Svcm(nc).add({
  name: "shout",
  version: "1.0.0",
  description: "capitals for jetflow's shout workflow",
});

svc.addGroup("svc").addEndpoint("shout", (err, msg) => {
  if (err) {
    console.error("shout:", err.message);
    return;
  }
  // The body is the node input, {"input": …, "nodes": {…}}; the headers say which run, node
  // and attempt it is (Idempotency-Key makes side effects happen once).
  let text;
  try {
    text = msg.json().input?.text;
  } catch {
    text = undefined;
  }
  if (typeof text !== "string" || text === "") {
    msg.respondError(400, "input.text is missing"); // 4xx: permanent, to the DLQ with this
    return;
  }
  // A long step would publish to Jetflow-Progress now and then: each message is a heartbeat,
  // a JSON one is saved as progress and comes back in Jetflow-Resume if the step is retried.
  const progress = msg.headers?.get("Jetflow-Progress");
  const words = text.split(/\s+/);
  const from = JSON.parse(msg.headers?.get("Jetflow-Resume") || '{"words": 0}').words;
  const out = [];
  for (let i = 0; i < words.length; i++) {
    out.push(words[i].toUpperCase());
    if (progress && i >= from) nc.publish(progress, JSON.stringify({ words: i + 1 }));
  }
  msg.respond(
    JSON.stringify({ shout: out.join(" "), run: msg.headers?.get("Jetflow-Run") ?? "", by: "typescript" }),
  );
});

console.log("shout: answering on svc.shout; Ctrl-C to stop");

const stop = async () => {
  await svc.stop();
  await nc.drain();
  process.exit(0);
};
process.on("SIGINT", stop);
process.on("SIGTERM", stop);
