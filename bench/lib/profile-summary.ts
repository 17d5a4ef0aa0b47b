/**
 * Sums V8 CPU profiles (`node --cpu-prof`) by function and by area, by self time: where
 * the process spent its CPU, not who called what.
 *
 * Usage: npx tsx bench/lib/profile-summary.ts <file.cpuprofile | directory>… [--top N]
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";

interface CallFrame {
  readonly functionName: string;
  readonly url: string;
  readonly lineNumber: number;
}

interface ProfileNode {
  readonly id: number;
  readonly callFrame: CallFrame;
}

/** The parts of a .cpuprofile this summary reads. */
interface CpuProfile {
  readonly nodes: readonly ProfileNode[];
  readonly samples: readonly number[];
  /** Microseconds between consecutive samples. */
  readonly timeDeltas: readonly number[];
}

/** Self time per key, in microseconds. */
type Tally = Map<string, number>;

/** Where a function lives: a package, Node's internals, our sources, or V8 itself. */
export function areaOf(frame: CallFrame): string {
  const { url, functionName } = frame;
  if (url === "") return functionName.startsWith("(") ? functionName : "(native)";
  if (url.startsWith("node:")) return `node:${url.slice(5).split("/")[0]}`;
  const pkg = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (pkg?.[1] !== undefined) return pkg[1];
  const own = /\/(src|dist|bench)\/(.+)$/.exec(url);
  if (own?.[2] !== undefined) return `${own[1]}/${own[2]}`;
  return url;
}

function add(tally: Tally, key: string, us: number): void {
  tally.set(key, (tally.get(key) ?? 0) + us);
}

/** Adds one profile's self times to `byFunction` and `byArea`; returns its sampled µs. */
export function tallyProfile(profile: CpuProfile, byFunction: Tally, byArea: Tally): number {
  const nodes = new Map<number, ProfileNode>();
  for (const n of profile.nodes) nodes.set(n.id, n);
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const node = nodes.get(profile.samples[i] as number);
    // A sample stands for the time until the next one.
    const us = profile.timeDeltas[i + 1] ?? 0;
    if (node === undefined || us <= 0) continue;
    total += us;
    const f = node.callFrame;
    const where =
      f.url === ""
        ? ""
        : ` ${f.url.replace(/^.*\/(node_modules|src|dist)\//, "$1/")}:${f.lineNumber + 1}`;
    add(byFunction, `${f.functionName || "(anonymous)"}${where}`, us);
    add(byArea, areaOf(f), us);
  }
  return total;
}

function profileFiles(paths: readonly string[]): string[] {
  const out: string[] = [];
  for (const p of paths) {
    if (statSync(p).isDirectory()) {
      for (const f of readdirSync(p)) if (f.endsWith(".cpuprofile")) out.push(join(p, f));
    } else out.push(p);
  }
  return out;
}

function table(title: string, tally: Tally, total: number, top: number): string {
  const rows = [...tally].sort((a, b) => b[1] - a[1]).slice(0, top);
  const lines = [`${title}`, "  self ms     %  "];
  for (const [key, us] of rows) {
    lines.push(
      `${(us / 1000).toFixed(0).padStart(9)} ${((us / total) * 100).toFixed(1).padStart(5)}%  ${key}`,
    );
  }
  return lines.join("\n");
}

function main(argv: readonly string[]): number {
  let top = 30;
  const paths: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === "--top") top = Number(argv[++i]);
    else paths.push(argv[i] as string);
  }
  const files = profileFiles(paths);
  if (files.length === 0) {
    process.stderr.write("usage: profile-summary <file.cpuprofile | directory>… [--top N]\n");
    return 2;
  }
  const byFunction: Tally = new Map();
  const byArea: Tally = new Map();
  let total = 0;
  for (const f of files) {
    total += tallyProfile(JSON.parse(readFileSync(f, "utf8")) as CpuProfile, byFunction, byArea);
  }
  process.stdout.write(
    `${files.length} profile(s), ${(total / 1000).toFixed(0)} ms sampled\n\n` +
      `${table("By area (self time)", byArea, total, top)}\n\n` +
      `${table("By function (self time)", byFunction, total, top)}\n`,
  );
  return 0;
}

process.exitCode = main(process.argv.slice(2));
