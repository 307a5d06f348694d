// The Socket.IO peer of lubdub-bench's hub scenarios
// (bench/src/scenarios/hub.rs, started by bench/src/peers/hub.rs): one
// Socket.IO 4 node with @socket.io/redis-adapter on the Redis at
// REDIS_URL, WebSocket transport only, listening on a free loopback port.
//
//   node server.js REDIS_URL      -> prints "port N" once it listens
//
// Events: "join" adds the socket to room "g"; "p" (data) sends "m" (data)
// to room "g" on every node, what lubdub's `hub.send_to_group` does.
// Install with `npm ci` in this directory (versions pinned in
// package-lock.json).
"use strict";

const http = require("node:http");
const { Server } = require("socket.io");
const { createClient } = require("redis");
const { createAdapter } = require("@socket.io/redis-adapter");

async function main() {
  const url = process.argv[2];
  if (!url) {
    console.error("usage: node server.js REDIS_URL");
    process.exit(2);
  }
  const pubClient = createClient({ url });
  const subClient = pubClient.duplicate();
  for (const c of [pubClient, subClient]) {
    c.on("error", (e) => console.error(`socket.io node: redis: ${e.message}`));
  }
  await Promise.all([pubClient.connect(), subClient.connect()]);

  const server = http.createServer();
  const io = new Server(server, {
    adapter: createAdapter(pubClient, subClient),
    transports: ["websocket"],
    serveClient: false,
  });
  io.on("connection", (socket) => {
    socket.on("join", () => socket.join("g"));
    socket.on("p", (data) => io.to("g").emit("m", data));
  });
  server.listen(0, "127.0.0.1", () => {
    console.log(`port ${server.address().port}`);
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
