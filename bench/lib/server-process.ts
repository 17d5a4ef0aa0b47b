/**
 * The server under benchmark as a child process: built JavaScript (`node dist/main.js`,
 * as in production) or the TypeScript sources through tsx.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { onAbort } from "./cleanup.js";

const run = promisify(execFile);
const listeningPrefix = "tripwire-dashboard listening on";

/** How to start the server: a built entry file, or src/main.ts through tsx. */
export type ServerEntry =
  | { readonly kind: "dist"; readonly mainJs: string; readonly cleanup: () => Promise<void> }
  | { readonly kind: "tsx" };

/**
 * Compiles src/ (tsconfig.build.json) into a private temporary directory, so the
 * benchmark neither needs nor overwrites the repository's dist/. The directory links
 * back to drizzle/ (migrations), public/ (the dashboard page) and node_modules/.
 */
export async function buildServer(repoRoot: string): Promise<ServerEntry> {
  const dir = await mkdtemp(join(tmpdir(), "tripwire-bench-"));
  try {
    await run(
      process.execPath,
      [
        join(repoRoot, "node_modules/typescript/bin/tsc"),
        "-p",
        join(repoRoot, "tsconfig.build.json"),
        "--outDir",
        join(dir, "dist"),
      ],
      { cwd: repoRoot, maxBuffer: 16 * 1024 * 1024 },
    );
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    const out = (err as { stdout?: string }).stdout ?? "";
    throw new Error(`building the server failed:\n${out.slice(0, 4000)}`);
  }
  // What dist/ reads relative to itself (migrations, the dashboard page) and its packages.
  for (const name of ["drizzle", "public", "node_modules"]) {
    await symlink(join(repoRoot, name), join(dir, name));
  }
  await writeFile(join(dir, "package.json"), '{"type":"module"}\n');
  const remove = (): Promise<void> => rm(dir, { recursive: true, force: true });
  const release = onAbort(remove);
  return {
    kind: "dist",
    mainJs: join(dir, "dist/main.js"),
    cleanup: () => {
      release();
      return remove();
    },
  };
}

/** A running server process. */
export interface ServerProcess {
  readonly pid: number;
  readonly port: number;
  /** Warnings and errors it logged (pino level ≥ 40), counted by message. */
  readonly warnings: Map<string, number>;
  /** SIGTERM, then waits for the graceful exit (SIGKILL after `timeoutMs`). */
  stop(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** Options of `startServerProcess`. */
export interface ServerProcessOptions {
  readonly repoRoot: string;
  readonly entry: ServerEntry;
  readonly databaseUrl: string;
  /** Extra TRIPWIRE_* settings. */
  readonly env?: Readonly<Record<string, string>>;
  /** Extra node flags, e.g. --cpu-prof. */
  readonly nodeArgs?: readonly string[];
}

/** Starts the server on 127.0.0.1, port 0, and resolves once it logs its address. */
export async function startServerProcess(options: ServerProcessOptions): Promise<ServerProcess> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value === undefined || key.startsWith("TRIPWIRE_") || key === "NODE_OPTIONS") continue;
    if (key === "DATABASE_URL" || key === "PORT" || key === "HOST" || key === "REDIS_URL") continue;
    env[key] = value;
  }
  Object.assign(env, {
    PORT: "0",
    HOST: "127.0.0.1",
    DATABASE_URL: options.databaseUrl,
    TRIPWIRE_LOG_LEVEL: "info",
    ...options.env,
  });
  const args =
    options.entry.kind === "dist"
      ? [...(options.nodeArgs ?? []), options.entry.mainJs]
      : [...(options.nodeArgs ?? []), "--import", "tsx", "src/main.ts"];
  const child = spawn(process.execPath, args, {
    cwd: options.repoRoot,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const kill = (): void => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  };
  process.once("exit", kill);
  const release = onAbort(async () => {
    kill();
    await exited;
  });

  const warnings = new Map<string, number>();
  const tail: string[] = [];
  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`server did not start:\n${tail.join("\n")}`)),
      60_000,
    );
    const onLine = (line: string): void => {
      tail.push(line);
      if (tail.length > 50) tail.shift();
      // main.ts reports a failed start on stderr; the process may then linger.
      if (
        line.startsWith("tripwire-dashboard failed to start") ||
        line.startsWith("configuration error")
      ) {
        setTimeout(() => reject(new Error(`server failed to start:\n${tail.join("\n")}`)), 100);
      }
      let record: { level?: number; msg?: string; address?: string };
      try {
        record = JSON.parse(line) as typeof record;
      } catch {
        return;
      }
      if ((record.level ?? 0) >= 40 && record.msg !== undefined) {
        warnings.set(record.msg, (warnings.get(record.msg) ?? 0) + 1);
      }
      if (record.msg?.startsWith(listeningPrefix) && record.address !== undefined) {
        clearTimeout(timer);
        resolve(Number(new URL(record.address).port));
      }
    };
    lines(child, onLine);
    void exited.then((how) => {
      clearTimeout(timer);
      reject(
        new Error(
          `server exited (${how.code ?? how.signal}) before listening:\n${tail.join("\n")}`,
        ),
      );
    });
  }).catch((err: unknown) => {
    kill();
    release();
    throw err;
  });
  if (child.pid === undefined) throw new Error("server process has no pid");

  return {
    pid: child.pid,
    port,
    warnings,
    async stop(timeoutMs) {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      const timer = setTimeout(kill, timeoutMs);
      const how = await exited;
      clearTimeout(timer);
      process.off("exit", kill);
      release();
      return how;
    },
  };
}

/** Calls `each` for every line of the child's stdout and stderr (always drained). */
function lines(child: ChildProcess, each: (line: string) => void): void {
  for (const stream of [child.stdout, child.stderr]) {
    if (stream === null) continue;
    let rest = "";
    stream.setEncoding("utf8");
    stream.on("data", (chunk: string) => {
      const parts = (rest + chunk).split("\n");
      rest = parts.pop() ?? "";
      for (const part of parts) each(part);
    });
  }
}
