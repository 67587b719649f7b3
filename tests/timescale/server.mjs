// TimescaleDB-in-WASM test server (PGlite fork with TimescaleDB 2.23 + pglite-socket), loopback only.
// A test target for `make test-timescale`, never the product's database.
//
// Usage: node tests/timescale/server.mjs [--port N] [--max-connections N] [--data-dir PATH]
//   --port 0 (the default) lets the OS pick a free port; the chosen one is printed on stdout as
//   "READY <port>" once the server accepts connections, so the caller waits for that line instead of sleeping.
//   Without --data-dir the database lives in memory and is gone when the process ends.
// Stops on SIGTERM/SIGINT, and when its stdin closes (so a killed pytest does not leave it running).
import { parseArgs } from "node:util";
import { PGlite } from "@electric-sql/pglite";
import { timescaledb } from "@electric-sql/pglite/timescaledb";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";

const { values } = parseArgs({
  options: {
    port: { type: "string", default: "0" },
    // Every connection shares ONE backend session, so real concurrency is 1; 2 leaves room for a pooled
    // connection being closed while its replacement opens. Set explicitly: the library default changed
    // between releases.
    "max-connections": { type: "string", default: "2" },
    "data-dir": { type: "string", default: "" },
  },
});

const db = await PGlite.create({
  dataDir: values["data-dir"] || undefined,
  extensions: { timescaledb },
});
const server = new PGLiteSocketServer({
  db,
  host: "127.0.0.1",
  port: Number.parseInt(values.port, 10),
  maxConnections: Number.parseInt(values["max-connections"], 10),
});
let port = 0;
server.addEventListener("listening", (event) => {
  port = event.detail.port;
});
await server.start();
process.stdout.write(`READY ${port}\n`);

let stopping = false;
async function stop(code) {
  if (stopping) return;
  stopping = true;
  try {
    await server.stop();
    await db.close();
  } finally {
    process.exit(code);
  }
}
process.on("SIGTERM", () => stop(0));
process.on("SIGINT", () => stop(0));
process.stdin.on("end", () => stop(0));
process.stdin.resume();
