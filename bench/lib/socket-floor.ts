/**
 * The loopback socket floor: what it costs this machine to move bytes from one Node
 * process to many sockets read by another, with no WebSocket, JSON or server logic in
 * between. The parent writes frames of a given size to `sockets` plain TCP connections
 * as fast as they drain; a child process reads and counts them. The whole machine's busy
 * CPU seconds (both processes, the kernel's TCP work, interrupts) per gigabyte moved is
 * the least any fan-out to subscribers on this machine can cost per byte, as the COPY
 * ceiling is the least persisting can cost per row.
 *
 * Run by scenario 4: the child is this file itself (`node --import tsx socket-floor.ts child`).
 */
import { fork } from "node:child_process";
import * as net from "node:net";
import { fileURLToPath } from "node:url";
import { onAbort } from "./cleanup.js";
import { sleep } from "./machine.js";
import { machineCpu } from "./proc-stats.js";

/** What one floor measurement found. */
export interface SocketFloor {
  readonly sockets: number;
  readonly frameBytes: number;
  readonly seconds: number;
  /** Bytes the reading process counted per second. */
  readonly bytesPerSecond: number;
  /** Busy CPU seconds of the whole machine per gigabyte (10^9 bytes) moved. */
  readonly coreSecondsPerGB: number;
  /** Busy cores of the whole machine while it ran. */
  readonly machineBusy: number;
}

export interface SocketFloorOptions {
  readonly sockets: number;
  /** Size of each write: the fan-out's frame size, measured in the same run. */
  readonly frameBytes: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly cwd: string;
}

type ChildMessage =
  | { readonly type: "connected" }
  | { readonly type: "bytes"; readonly bytes: number };

/** Measures the floor; the sockets and the child are gone when it resolves. */
export async function measureSocketFloor(o: SocketFloorOptions): Promise<SocketFloor> {
  const sockets: net.Socket[] = [];
  const server = net.createServer((s) => {
    s.setNoDelay(true);
    s.on("error", () => {});
    sockets.push(s);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as net.AddressInfo).port;
  const child = fork(fileURLToPath(import.meta.url), ["child", String(port), String(o.sockets)], {
    cwd: o.cwd,
    execArgv: ["--import", "tsx"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const release = onAbort(async () => {
    child.kill("SIGKILL");
  });
  const next = <T extends ChildMessage["type"]>(type: T) =>
    new Promise<Extract<ChildMessage, { type: T }>>((resolve, reject) => {
      const onMessage = (m: ChildMessage) => {
        if (m.type !== type) return;
        child.off("message", onMessage);
        resolve(m as Extract<ChildMessage, { type: T }>);
      };
      child.on("message", onMessage);
      child.once("exit", () => reject(new Error("the socket floor's reader exited")));
    });
  let writing = true;
  try {
    await next("connected");
    while (sockets.length < o.sockets) await sleep(10);
    const frame = Buffer.alloc(o.frameBytes, 0x5a);
    // Each socket is written to whenever it drained: as fast as the reader takes bytes.
    const pump = (s: net.Socket): void => {
      while (writing && !s.destroyed && s.write(frame)) {}
      if (writing && !s.destroyed) s.once("drain", () => pump(s));
    };
    for (const s of sockets) pump(s);
    await sleep(o.warmupMs);
    const count = async () => {
      child.send("count");
      return (await next("bytes")).bytes;
    };
    const bytes0 = await count();
    const cpu0 = machineCpu();
    const t0 = performance.now();
    await sleep(o.durationMs);
    const bytes1 = await count();
    const cpu1 = machineCpu();
    const seconds = (performance.now() - t0) / 1000;
    const moved = bytes1 - bytes0;
    const busy = cpu1.busy - cpu0.busy;
    return {
      sockets: o.sockets,
      frameBytes: o.frameBytes,
      seconds,
      bytesPerSecond: moved / seconds,
      coreSecondsPerGB: moved > 0 ? busy / (moved / 1e9) : Number.NaN,
      machineBusy: busy / seconds,
    };
  } finally {
    writing = false;
    child.kill("SIGKILL");
    for (const s of sockets) s.destroy();
    await new Promise<void>((resolve) => server.close(() => resolve()));
    release();
  }
}

/** The reading side: connects, counts every byte, answers "count" with the total. */
function runChild(port: number, count: number): void {
  let bytes = 0;
  let connected = 0;
  for (let i = 0; i < count; i++) {
    const s = net.connect(port, "127.0.0.1");
    s.on("data", (d: Buffer) => {
      bytes += d.length;
    });
    s.on("error", () => {});
    s.once("connect", () => {
      if (++connected === count) process.send?.({ type: "connected" } satisfies ChildMessage);
    });
  }
  process.on("message", (m) => {
    if (m === "count") process.send?.({ type: "bytes", bytes } satisfies ChildMessage);
  });
  process.on("disconnect", () => process.exit(0));
}

if (process.argv[2] === "child") runChild(Number(process.argv[3]), Number(process.argv[4]));
