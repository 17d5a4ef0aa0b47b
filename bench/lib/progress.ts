/**
 * The progress display on stderr: on a terminal, one line rewritten in place (what runs,
 * for how long, its latest status); elsewhere (CI logs), a status line at most every
 * few seconds. Finished steps always get a line of their own.
 */

const logEveryMs = 10_000;

export class Progress {
  readonly #tty = process.stderr.isTTY === true;
  #step = "";
  #stepStart = 0;
  #lastLogged = 0;
  #status = "";

  /** Starts a step (a scenario in a round). */
  begin(step: string): void {
    this.#step = step;
    this.#stepStart = performance.now();
    this.#status = "";
    this.#lastLogged = 0;
    this.status("starting");
  }

  /** The step's latest status. */
  status(text: string): void {
    this.#status = text;
    const now = performance.now();
    if (this.#tty) {
      const line = `${this.#prefix(now)} ${text}`;
      const width = process.stderr.columns || 120;
      process.stderr.write(`\r\x1b[K${line.slice(0, Math.max(20, width - 1))}`);
    } else if (now - this.#lastLogged >= logEveryMs) {
      this.#lastLogged = now;
      process.stderr.write(`${this.#prefix(now)} ${text}\n`);
    }
  }

  /** Ends the step with a line that stays. */
  end(summary: string): void {
    const line = `${this.#prefix(performance.now())} ${summary}`;
    process.stderr.write(this.#tty ? `\r\x1b[K${line}\n` : `${line}\n`);
  }

  /** A line of its own, outside any step. */
  note(text: string): void {
    process.stderr.write(this.#tty ? `\r\x1b[K${text}\n` : `${text}\n`);
    if (this.#tty && this.#step !== "") this.status(this.#status);
  }

  #prefix(now: number): string {
    return `[${this.#step} ${((now - this.#stepStart) / 1000).toFixed(0)} s]`;
  }
}
