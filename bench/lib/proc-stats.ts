/**
 * CPU accounting from /proc (Linux): per process, and for the whole machine, so a
 * benchmark can say which process used the cores and how busy the machine was otherwise.
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";

/** Clock ticks per second of /proc times (almost always 100). */
const ticksPerSecond = (() => {
  try {
    const n = Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim());
    return Number.isFinite(n) && n > 0 ? n : 100;
  } catch {
    return 100;
  }
})();

/** CPU seconds (user + system, all threads) used so far by `pid`; undefined once it is gone. */
export function processCpuSeconds(pid: number): number | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces; the fields after it are fixed.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  return (utime + stime) / ticksPerSecond;
}

/** CPU seconds of the whole machine (all cores) since boot. */
export interface MachineCpu {
  /** Everything but idle and iowait. */
  readonly busy: number;
  /** Interrupt and softirq time: on loopback, most of the TCP work, charged to no process. */
  readonly irq: number;
  /** Time the hypervisor gave to someone else while this VM wanted to run. */
  readonly steal: number;
  readonly total: number;
}

/** Reads the first line of /proc/stat. */
export function machineCpu(): MachineCpu {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? "";
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const at = (i: number): number => v[i] ?? 0;
  // user nice system idle iowait irq softirq steal (guest time is already in user)
  const total = v.slice(0, 8).reduce((a, b) => a + b, 0);
  return {
    busy: (total - at(3) - at(4)) / ticksPerSecond,
    irq: (at(5) + at(6)) / ticksPerSecond,
    steal: at(7) / ticksPerSecond,
    total: total / ticksPerSecond,
  };
}

/** Tracks the CPU used by a changing set of processes between `start()` and `stop()`. */
export class CpuMeter {
  readonly #start = new Map<number, number>();
  readonly #last = new Map<number, number>();

  /** Records the starting CPU time of each pid (call again to add pids that appeared). */
  add(pids: Iterable<number>): void {
    for (const pid of pids) {
      if (this.#start.has(pid)) continue;
      const s = processCpuSeconds(pid);
      if (s !== undefined) {
        this.#start.set(pid, s);
        this.#last.set(pid, s);
      }
    }
  }

  /** Reads every tracked pid again (a pid that exited keeps its last reading). */
  sample(): void {
    for (const pid of this.#start.keys()) {
      const s = processCpuSeconds(pid);
      if (s !== undefined) this.#last.set(pid, s);
    }
  }

  /** CPU seconds used by the tracked pids between `add` and the last `sample`. */
  get seconds(): number {
    let sum = 0;
    for (const [pid, start] of this.#start) sum += (this.#last.get(pid) ?? start) - start;
    return sum;
  }
}

/** Resident set size of `pid` in bytes (VmRSS); undefined once it is gone. */
export function processRssBytes(pid: number): number | undefined {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m?.[1] === undefined ? undefined : Number(m[1]) * 1024;
  } catch {
    return undefined;
  }
}

/** Samples a process's RSS on an interval between `start()` and `stop()`: first and peak. */
export class RssSampler {
  #first: number | undefined;
  #peak = 0;
  #last: number | undefined;
  #timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly pid: number,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    this.#read();
    this.#timer = setInterval(() => this.#read(), this.intervalMs);
  }

  stop(): { first: number | undefined; peak: number; last: number | undefined } {
    clearInterval(this.#timer);
    this.#read();
    return { first: this.#first, peak: this.#peak, last: this.#last };
  }

  #read(): void {
    const rss = processRssBytes(this.pid);
    if (rss === undefined) return;
    this.#first ??= rss;
    this.#last = rss;
    if (rss > this.#peak) this.#peak = rss;
  }
}
