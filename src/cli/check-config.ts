/**
 * `tripwire-dashboard check-config`: validates the settings as `serve` would, including
 * the TLS files, and lists the effective value of each with its source, secrets redacted.
 */
import { type Config, loadConfig, settings } from "../config.js";
import { createTlsServer, readTlsMaterial } from "../http/tls.js";
import type { SettingsInput } from "./config-file.js";
import { redactSetting } from "./redact.js";

/**
 * Loads and checks the configuration; returns the report to print. Throws the
 * ConfigError that `serve` would stop with.
 */
export function checkConfig(input: SettingsInput, configFile: string | undefined): string {
  const config = loadConfig(input.env);
  const tls = readTlsMaterial(config);
  if (tls !== undefined) {
    // Builds (never listens) the TLS server: a key that does not fit the certificate fails here.
    createTlsServer(() => {}, { tls, closeGraceMs: 0, handshakeTimeoutMs: 1_000 });
  }
  const rows = Object.entries(settings).map(([key, setting]) => [
    setting.env,
    input.sourceOf(setting.env),
    displayValue(setting.env, config[key as keyof Config]),
  ]);
  const header = ["VARIABLE", "SOURCE", "VALUE"];
  const widths = [0, 1].map((i) =>
    Math.max(...[header, ...rows].map((row) => row[i]?.length ?? 0)),
  );
  const line = (row: readonly string[]): string =>
    `${(row[0] ?? "").padEnd(widths[0] ?? 0)}  ${(row[1] ?? "").padEnd(widths[1] ?? 0)}  ${row[2] ?? ""}`;
  const from =
    configFile === undefined
      ? "from the environment"
      : `from the environment over config file ${configFile}`;
  return `The configuration is valid (${from}; secrets shown as ***).\n\n${[header, ...rows].map(line).join("\n")}\n`;
}

/** A setting's effective value as text, as the variable would hold it, redacted. */
function displayValue(variable: string, value: Config[keyof Config]): string {
  if (value === undefined) return "(unset)";
  if (Array.isArray(value)) {
    if (value.length === 0) return "(unset)";
    return value.map((item: string) => redactSetting(variable, item)).join(",");
  }
  return redactSetting(variable, String(value));
}
