/**
 * What the benchmark must undo however it ends (finished, failed, Ctrl-C, SIGTERM):
 * child processes to kill and databases to drop. Each resource registers an undo step
 * while it exists; on a signal every step still registered runs, then the process exits.
 */

type Undo = () => void | Promise<void>;

const steps = new Set<Undo>();
let exiting = false;

/** Registers `undo` until the returned function is called (the resource was released). */
export function onAbort(undo: Undo): () => void {
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
      process.stderr.write(`\n${signal}: stopping servers and clients, dropping databases…\n`);
      void undoAll().finally(() => process.exit(code));
    });
  }
}
