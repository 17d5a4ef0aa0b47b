/**
 * What the numbers are about: the machine (CPU, cores, RAM, Node, PostgreSQL), the code
 * (git commit), and whether the machine was quiet enough to measure on.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { withClient } from "./database.js";
import { machineCpu } from "./proc-stats.js";

/** The code under test: the commit, and whether the server's sources differ from it. */
export interface CodeVersion {
  readonly commit: string;
  readonly subject: string;
  /** Files under src/, proto/ or drizzle/ changed since the commit (git status). */
  readonly uncommitted: readonly string[];
}

/** Reads the commit of `repoRoot` (right before a measurement: what its numbers are about). */
export function codeVersion(repoRoot: string): CodeVersion {
  const git = (...args: string[]): string =>
    execFileSync("git", args, { cwd: repoRoot, encoding: "utf8" }).trim();
  try {
    const uncommitted = git("status", "--porcelain", "--", "src", "proto", "drizzle")
      .split("\n")
      .filter((line) => line !== "");
    return {
      commit: git("rev-parse", "--short", "HEAD"),
      subject: git("log", "-1", "--format=%s"),
      uncommitted,
    };
  } catch {
    return { commit: "unknown", subject: "not a git checkout", uncommitted: [] };
  }
}

/** The machine the numbers come from. */
export interface Machine {
  readonly cpuModel: string;
  readonly cores: number;
  readonly memoryGiB: number;
  readonly node: string;
  readonly postgres: string;
}

/** CPU model (from /proc/cpuinfo on Linux), cores, RAM, Node and the PostgreSQL server version. */
export async function describeMachine(adminUrl: string): Promise<Machine> {
  let cpuModel = cpus()[0]?.model ?? "unknown";
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"));
    if (m?.[1] !== undefined) cpuModel = m[1].trim();
  } catch {
    // not Linux: keep os.cpus()
  }
  const postgres = await withClient(adminUrl, async (c) => {
    const r = await c.query<{ server_version: string }>("show server_version");
    return r.rows[0]?.server_version ?? "unknown";
  });
  return {
    cpuModel,
    cores: cpus().length,
    memoryGiB: Math.round((totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
    postgres,
  };
}

export const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/**
 * Waits (at most `maxWaitMs`) until fewer than `quietCores` cores are busy, so a
 * measurement does not start while something else (a test run, a compiler) holds the
 * cores. Returns how busy the machine was at the last look, in cores (undefined: not
 * checked). `onWait` is told while it waits.
 */
export async function waitForQuiet(
  maxWaitMs: number,
  quietCores: number,
  onWait: (busyCores: number, waitedMs: number) => void,
): Promise<number | undefined> {
  if (maxWaitMs <= 0) return undefined;
  const began = performance.now();
  for (;;) {
    const a = machineCpu();
    await sleep(2_000);
    const b = machineCpu();
    const busy = (b.busy - a.busy) / 2;
    const waited = performance.now() - began;
    if (busy < quietCores || waited >= maxWaitMs) return busy;
    onWait(busy, waited);
  }
}
