/**
 * The `tripwire-dashboard` command line: which command to run, and the help text. Pure
 * functions over the arguments; main.ts runs what they return.
 */
import { settings } from "../config.js";

/** What the command line asks for. */
export type Command =
  | {
      readonly name: "serve" | "migrate" | "check-config";
      /** `--config FILE`: settings read from a file, under the environment. */
      readonly configFile: string | undefined;
    }
  | { readonly name: "help" }
  | { readonly name: "version" };

/** A command line that cannot be run; the message says what was wrong. Exit code 2. */
export class UsageError extends Error {
  override readonly name = "UsageError";
}

/** The name users type, in messages. */
const programName = "tripwire-dashboard";

const commands = ["serve", "migrate", "check-config", "help"] as const;

/**
 * Reads the arguments after the program name. `serve` when no command is given; `--help`
 * and `--version` win over anything else. Throws a UsageError for anything unknown.
 */
export function parseCommandLine(args: readonly string[]): Command {
  const positionals: string[] = [];
  let help = false;
  let version = false;
  let configFile: string | undefined;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === "-h" || arg === "--help") {
      help = true;
    } else if (arg === "-v" || arg === "--version") {
      version = true;
    } else if (arg === "--config" || arg.startsWith("--config=")) {
      const value = arg === "--config" ? args[++i] : arg.slice("--config=".length);
      if (value === undefined || value.trim() === "" || value.startsWith("-")) {
        throw new UsageError("--config needs a file path, as in --config /etc/tripwire.json");
      }
      if (configFile !== undefined) throw new UsageError("--config is given more than once");
      configFile = value;
    } else if (arg.startsWith("-") && arg !== "-") {
      throw new UsageError(
        `unknown option ${JSON.stringify(arg.split("=")[0])}: settings are environment variables or --config keys`,
      );
    } else {
      positionals.push(arg);
    }
  }
  if (help) return { name: "help" };
  if (version) return { name: "version" };
  const [name = "serve", ...extra] = positionals;
  if (!isCommand(name)) {
    throw new UsageError(
      `unknown command ${JSON.stringify(name)}: expected one of ${commands.join(", ")}`,
    );
  }
  if (extra.length > 0) {
    throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])} after ${name}`);
  }
  if (name === "help") return { name: "help" };
  return { name, configFile };
}

function isCommand(name: string): name is (typeof commands)[number] {
  return (commands as readonly string[]).includes(name);
}

/** The pointer appended to usage errors. */
export const helpPointer = `Run "${programName} --help" for the commands, options and settings.`;

const width = 80;

/** `--help`: usage, commands, options and every setting with its default and doc. */
export function helpText(version: string): string {
  const settingLines = Object.values(settings).flatMap((s) => [
    `  ${s.env} (default: ${s.defaultText === "(unset)" ? "unset" : s.defaultText})`,
    ...wrap(plain(s.doc), "      "),
  ]);
  return `${programName} ${version}: the TripWire dashboard server. Agents stream alerts over
gRPC, Connect or gRPC-Web; browsers watch them live over WebSocket.

Usage: ${programName} [command] [--config FILE]

Commands:
  serve          Run the server (the default): migrate the database, then listen.
  migrate        Apply pending database migrations and exit (for deployment pipelines).
  check-config   Validate the settings, print the effective values with secrets
                 redacted, and exit.
  help           Show this help.

Options:
  --config FILE  Read settings from FILE: a JSON object whose keys are the variables
                 below, e.g. {"PORT": 9000, "TRIPWIRE_WS_TOKENS": "a,b"}. A variable
                 set (non-empty) in the environment overrides the file.
  -h, --help     Show this help.
  -v, --version  Print the version.

Exit codes: 0 success; 1 failure (e.g. the database is unreachable); 2 a bad command
line, settings or config file.

Settings (environment variables, or keys of the --config file):
${settingLines.join("\n")}
`;
}

/** The docs are Markdown; a terminal shows `code` better without the backticks. */
function plain(doc: string): string {
  return doc.replaceAll("`", "");
}

function wrap(text: string, indent: string): string[] {
  const lines: string[] = [];
  let line = "";
  for (const word of text.split(/\s+/)) {
    if (line !== "" && indent.length + line.length + 1 + word.length > width) {
      lines.push(indent + line);
      line = word;
    } else {
      line = line === "" ? word : `${line} ${word}`;
    }
  }
  if (line !== "") lines.push(indent + line);
  return lines;
}
