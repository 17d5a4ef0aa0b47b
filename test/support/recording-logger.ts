/**
 * A Logger that keeps every call, for asserting what was logged.
 */
import type { Logger } from "../../src/logger.js";

/** One logged call. */
export interface LogEntry {
  readonly level: string;
  readonly obj: object;
  readonly msg: string;
}

/** Records every call; `at(level)` lists the calls at one level. */
export class RecordingLogger implements Logger {
  readonly entries: LogEntry[] = [];
  error(obj: object, msg: string): void {
    this.entries.push({ level: "error", obj, msg });
  }
  warn(obj: object, msg: string): void {
    this.entries.push({ level: "warn", obj, msg });
  }
  info(obj: object, msg: string): void {
    this.entries.push({ level: "info", obj, msg });
  }
  debug(obj: object, msg: string): void {
    this.entries.push({ level: "debug", obj, msg });
  }
  at(level: string): LogEntry[] {
    return this.entries.filter((e) => e.level === level);
  }
  /** The messages logged at one level, in order. */
  messages(level: string): string[] {
    return this.at(level).map((e) => e.msg);
  }
}
