/**
 * A private `redis-server` for tests that must stop and restart Redis (outages), so they
 * never disturb the shared one. It keeps nothing on disk and listens on 127.0.0.1 only.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createServer } from "node:net";

/** A running private Redis. */
export interface PrivateRedis {
  readonly port: number;
  /** `redis://127.0.0.1:<port>` */
  readonly url: string;
  /** Whether the process is running. */
  readonly running: boolean;
  /** Ends the process (SIGKILL by default: an outage, not a shutdown) and waits for it. */
  stop(signal?: "SIGKILL" | "SIGTERM"): Promise<void>;
  /** Starts it again on the same port, empty, and resolves once it accepts connections. */
  restart(): Promise<void>;
}

const readyLine = "Ready to accept connections";
const startTimeoutMs = 10_000;

// Safety net: a test worker that exits must not leave servers behind.
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/** A port that was free a moment ago (the kernel picks it). */
async function freePort(): Promise<number> {
  const server = createServer();
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const address = server.address();
  server.close();
  await once(server, "close");
  if (address === null || typeof address === "string") throw new Error("no port");
  return address.port;
}

/** Spawns redis-server on `port`; resolves once it logs that it is ready. */
async function spawnRedis(port: number): Promise<ChildProcess> {
  const child = spawn(
    "redis-server",
    [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--daemonize",
      "no",
      "--loglevel",
      "notice",
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
  live.add(child);
  child.once("exit", () => live.delete(child));
  let output = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`redis-server did not start on port ${port}:\n${output}`));
    }, startTimeoutMs);
    const onData = (chunk: Buffer): void => {
      output += String(chunk);
      if (output.includes(readyLine)) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stdout?.on("data", onData);
    child.stderr?.on("data", onData);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited (${code ?? signal}) on port ${port}:\n${output}`));
    });
  });
  // Keep draining its output so it never blocks on a full pipe.
  child.stdout?.resume();
  child.stderr?.resume();
  return child;
}

/** Starts a private redis-server on a free port. */
export async function startPrivateRedis(): Promise<PrivateRedis> {
  // Another process may take the port between the probe and the bind: try a few.
  let port = 0;
  let child: ChildProcess | undefined;
  for (let attempt = 0; child === undefined; attempt++) {
    port = await freePort();
    try {
      child = await spawnRedis(port);
    } catch (err) {
      if (attempt >= 2) throw err;
    }
  }
  let current: ChildProcess | undefined = child;
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    get running() {
      return current !== undefined;
    },
    async stop(signal = "SIGKILL") {
      const proc = current;
      if (proc === undefined) return;
      current = undefined;
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = once(proc, "exit");
        proc.kill(signal);
        await exited;
      }
    },
    async restart() {
      if (current !== undefined) throw new Error("redis-server is still running");
      current = await spawnRedis(port);
    },
  };
}
