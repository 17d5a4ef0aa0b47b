/**
 * What the benchmark must undo however it ends (finished, failed, Ctrl-C, SIGTERM):
 * child processes to kill and databases to drop. Each resource registers an undo step
 * while it exists; on a signal every step still registered runs, then the process exits.
 */

type Undo = () => void | Promise<void>;

const steps = new Set<Undo>();
let exiting = false;

/** Whether a signal is stopping the benchmark (its results are then not worth keeping). */
export function stopping(): boolean {
  return exiting;
}

/** Thrown when a resource is asked for while everything is being undone. */
export class AbortingError extends Error {
  constructor() {
    super("the benchmark is stopping");
  }
}

/**
 * Registers `undo` until the returned function is called (the resource was released).
 * While stopping on a signal, no new resource may start: this throws AbortingError.
 */
export function onAbort(undo: Undo): () => void {
  if (exiting) throw new AbortingError();
  steps.add(undo);
  return () => {
    steps.delete(undo);
  };
}

/** Runs every registered step (newest first), each at most once, errors reported. */
export async function undoAll(): Promise<void> {
  const pending = [...steps].reverse();
  steps.clear();
  for (const undo of pending) {
    try {
      await undo();
    } catch (err) {
      process.stderr.write(`cleanup: ${err instanceof Error ? err.message : String(err)}\n`);
    }
  }
}

/**
 * On SIGINT or SIGTERM: undo everything, then exit with 128 + the signal number. A
 * second signal while cleaning up exits at once (children are still killed by their
 * own exit hooks).
 */
export function undoOnSignals(): void {
  for (const [signal, code] of [
    ["SIGINT", 130],
    ["SIGTERM", 143],
  ] as const) {
    process.on(signal, () => {
      if (exiting) process.exit(code);
      exiting = true;
      // What was running fails as its processes die; only the cleanup matters now.
      process.on("unhandledRejection", () => {});
      process.stderr.write(`\n${signal}: stopping servers and clients, dropping databases…\n`);
      void undoAll().finally(() => process.exit(code));
    });
  }
}
