#!/usr/bin/env node
/**
 * The `tripwire-dashboard` process: reads the command line and the settings, runs the
 * command (serve by default), and for `serve` shuts down gracefully on SIGTERM/SIGINT.
 * The only file that touches `process`; the commands live in src/cli/.
 */
import { checkConfig } from "./cli/check-config.js";
import { helpPointer, helpText, parseCommandLine, UsageError } from "./cli/command-line.js";
import { readConfigFile, type SettingsInput, settingsInput } from "./cli/config-file.js";
import { MigrateError, runMigrate } from "./cli/migrate-command.js";
import { startServing } from "./cli/serve-command.js";
import { packageVersion } from "./cli/version.js";
import { ConfigError, loadConfig } from "./config.js";

/** Runs the command; resolves to its exit code, or undefined while the server runs. */
async function main(argv: readonly string[]): Promise<number | undefined> {
  const command = parseCommandLine(argv);
  const version = packageVersion();
  if (command.name === "help") {
    process.stdout.write(helpText(version));
    return 0;
  }
  if (command.name === "version") {
    process.stdout.write(`${version}\n`);
    return 0;
  }
  const input: SettingsInput = settingsInput(
    process.env,
    command.configFile === undefined ? undefined : readConfigFile(command.configFile),
  );
  if (command.name === "check-config") {
    process.stdout.write(checkConfig(input, command.configFile));
    return 0;
  }
  const config = loadConfig(input.env);
  if (command.name === "migrate") {
    process.stdout.write(await runMigrate(config));
    return 0;
  }

  const serving = await startServing(config, version);
  let stopping = false;
  const stop = async (signal: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    serving.app.log.info({ signal }, "shutting down");
    try {
      await serving.close();
      process.exitCode = 0;
    } catch (err) {
      serving.app.log.error({ err }, "shutdown failed");
      process.exitCode = 1;
    }
  };
  process.once("SIGTERM", () => void stop("SIGTERM"));
  process.once("SIGINT", () => void stop("SIGINT"));
  return undefined;
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== undefined) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`tripwire-dashboard: ${err.message}\n${helpPointer}\n`);
      process.exitCode = 2;
    } else if (err instanceof ConfigError) {
      process.stderr.write(`configuration error: ${err.message}\n`);
      process.exitCode = 2;
    } else if (err instanceof MigrateError) {
      process.stderr.write(`migrate failed: ${err.message}\n`);
      process.exitCode = 1;
    } else {
      console.error("tripwire-dashboard failed to start:", err);
      process.exitCode = 1;
    }
  },
);
