/**
 * The real server as a child process (`node --import tsx src/main.ts`), for tests that
 * need what an in-process server cannot give: a `kill -9` mid-stream, or SIGTERM handling.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));
const listeningPrefix = "tripwire-dashboard listening on";
/** Lines of output kept per child, for the message when it does not start. */
const keptLines = 200;

/** Where the child's database is: PostgreSQL by URL, or a PGlite data directory. */
export type ChildDatabase = { readonly url: string } | { readonly dataDir: string };

/** How a child process ended. */
export interface ChildExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A running server process, listening on 127.0.0.1. */
export interface ChildServer {
  readonly pid: number;
  readonly port: number;
  /** `127.0.0.1:<port>`, as gRPC clients take it. */
  readonly target: string;
  /** Resolves once the process has exited (never rejects). */
  readonly exited: Promise<ChildExit>;
  /** Sends `signal` to the process; a no-op once it has exited. */
  kill(signal: NodeJS.Signals): void;
  /** The last lines it wrote to stdout and stderr, for failure messages. */
  output(): string;
}

/** Options of `startChildServer`. */
export interface ChildServerOptions {
  readonly database: ChildDatabase;
  /** Extra environment (TRIPWIRE_* settings). */
  readonly env?: Readonly<Record<string, string>>;
  /** How long the process may take to log that it listens. */
  readonly startTimeoutMs?: number;
}

// Safety net: a test worker that exits must not leave servers behind.
const live = new Set<ChildProcess>();
process.once("exit", () => {
  for (const child of live) child.kill("SIGKILL");
});

/**
 * Starts `src/main.ts` on port 0 and resolves when it logs its listening address.
 * Rejects (after killing the process) if it exits first or takes longer than the deadline.
 */
export async function startChildServer(options: ChildServerOptions): Promise<ChildServer> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    // The child's settings come from `options` only, not from whatever the runner has.
    if (value === undefined || key.startsWith("TRIPWIRE_") || key === "NODE_OPTIONS") continue;
    if (key === "DATABASE_URL" || key === "PORT" || key === "HOST") continue;
    env[key] = value;
  }
  Object.assign(env, {
    PORT: "0",
    HOST: "127.0.0.1",
    TRIPWIRE_LOG_LEVEL: "info",
    ...("url" in options.database
      ? { DATABASE_URL: options.database.url }
      : { TRIPWIRE_DATA_DIR: options.database.dataDir }),
    ...options.env,
  });

  const child = spawn(process.execPath, ["--import", "tsx", "src/main.ts"], {
    cwd: repoRoot,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  live.add(child);
  const exited = new Promise<ChildExit>((resolve) => {
    child.once("exit", (code, signal) => {
      live.delete(child);
      resolve({ code, signal });
    });
  });
  const lines: string[] = [];
  const keep = (line: string): void => {
    lines.push(line);
    if (lines.length > keptLines) lines.shift();
  };
  const output = (): string => lines.join("\n");
  const kill = (signal: NodeJS.Signals): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };

  const listening = new Promise<number>((resolve, reject) => {
    // Always drained, so a chatty child never blocks on a full pipe.
    onLines(child.stdout, (line) => {
      keep(line);
      const port = listeningPort(line);
      if (port !== undefined) resolve(port);
    });
    onLines(child.stderr, keep);
    child.once("error", reject);
    void exited.then((how) =>
      reject(new Error(`server exited before listening (${describeExit(how)}):\n${output()}`)),
    );
  });
  const deadlineMs = options.startTimeoutMs ?? 30_000;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`server did not listen within ${deadlineMs} ms:\n${output()}`)),
      deadlineMs,
    );
  });
  let port: number;
  try {
    port = await Promise.race([listening, deadline]);
  } catch (err) {
    kill("SIGKILL");
    await exited;
    throw err;
  } finally {
    clearTimeout(timer);
  }
  if (child.pid === undefined) throw new Error("spawned server has no pid");
  return { pid: child.pid, port, target: `127.0.0.1:${port}`, exited, kill, output };
}

/** Sends SIGKILL to the server (if still running) and waits for it to be gone. */
export async function killChildServer(server: ChildServer): Promise<void> {
  server.kill("SIGKILL");
  await server.exited;
}

/** Describes an exit for messages: "code 0" or "signal SIGKILL". */
export function describeExit(how: ChildExit): string {
  return how.signal !== null ? `signal ${how.signal}` : `code ${how.code}`;
}

function onLines(stream: NodeJS.ReadableStream, each: (line: string) => void): void {
  let rest = "";
  stream.setEncoding("utf8");
  stream.on("data", (chunk: string) => {
    const parts = (rest + chunk).split("\n");
    rest = parts.pop() ?? "";
    for (const part of parts) each(part);
  });
  stream.on("end", () => {
    if (rest !== "") each(rest);
  });
}

/** The port from main.ts's "listening on" log record (pino JSON), if this is that line. */
function listeningPort(line: string): number | undefined {
  if (!line.includes(listeningPrefix)) return undefined;
  let record: { msg?: unknown; address?: unknown };
  try {
    record = JSON.parse(line) as { msg?: unknown; address?: unknown };
  } catch {
    return undefined;
  }
  if (typeof record.msg !== "string" || !record.msg.startsWith(listeningPrefix)) return undefined;
  if (typeof record.address !== "string") return undefined;
  const port = Number(new URL(record.address).port);
  return Number.isInteger(port) && port > 0 ? port : undefined;
}
