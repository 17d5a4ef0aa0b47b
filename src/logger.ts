/**
 * The logging surface that services depend on: a subset of pino's, so Fastify's logger
 * (or any child of it) can be passed in, and tests can pass a recorder.
 */
export interface Logger {
  error(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  debug(obj: object, msg: string): void;
}

/** A logger that drops everything. */
export const silentLogger: Logger = {
  error() {},
  warn() {},
  info() {},
  debug() {},
};
