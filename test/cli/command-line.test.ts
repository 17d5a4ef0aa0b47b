import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { checkConfig } from "../../src/cli/check-config.js";
import { parseCommandLine, UsageError } from "../../src/cli/command-line.js";
import { parseConfigFile, settingsInput } from "../../src/cli/config-file.js";
import { redactSetting, redactUrl } from "../../src/cli/redact.js";
import { ConfigError } from "../../src/config.js";

describe("parseCommandLine", () => {
  it.each([
    [[], { name: "serve", configFile: undefined }],
    [["serve"], { name: "serve", configFile: undefined }],
    [["migrate", "--config", "tw.json"], { name: "migrate", configFile: "tw.json" }],
    [["--config=tw.json", "check-config"], { name: "check-config", configFile: "tw.json" }],
    [["help"], { name: "help" }],
    [["-h"], { name: "help" }],
    [["migrate", "--help"], { name: "help" }],
    [["--version"], { name: "version" }],
    [["-v", "serve"], { name: "version" }],
  ])("reads %j as %j", (args, command) => {
    expect(parseCommandLine(args)).toEqual(command);
  });

  it.each([
    [["frob"], /unknown command "frob": expected one of serve, migrate, check-config, help/],
    [["--port", "9000"], /unknown option "--port": settings are environment variables/],
    [["--port=9000"], /unknown option "--port"/],
    [["--config"], /--config needs a file path/],
    [["--config", "--help"], /--config needs a file path/],
    [["--config", "a.json", "--config", "b.json"], /--config is given more than once/],
    [["serve", "now"], /unexpected argument "now" after serve/],
  ])("refuses %j with a usage error saying what was wrong", (args, message) => {
    expect(() => parseCommandLine(args)).toThrow(UsageError);
    expect(() => parseCommandLine(args)).toThrow(message);
  });
});

describe("parseConfigFile", () => {
  it("reads a JSON object of setting variables, numbers as their text", () => {
    expect(
      parseConfigFile('{"PORT": 9000, "DATABASE_URL": "postgres://db/tw", "HOST": ""}', "tw.json"),
    ).toEqual({ PORT: "9000", DATABASE_URL: "postgres://db/tw", HOST: "" });
  });

  it.each([
    ["{", /config file tw.json is not valid JSON/],
    ["[1]", /config file tw.json must hold a JSON object of setting variables to values/],
    ['"PORT=1"', /must hold a JSON object/],
    ['{"PROT": 1}', /config file tw.json: unknown setting "PROT"; "tripwire-dashboard --help"/],
    ['{"batch_size": 1}', /unknown setting "batch_size" \(did you mean "TRIPWIRE_BATCH_SIZE"\?\)/],
    [
      '{"dbPoolSize": 1}',
      /unknown setting "dbPoolSize" \(did you mean "TRIPWIRE_DB_POOL_SIZE"\?\)/,
    ],
    [
      '{"TRIPWIRE_WS_TOKENS": ["a"]}',
      /TRIPWIRE_WS_TOKENS must be a string or a number, not an array/,
    ],
    ['{"PORT": null}', /PORT must be a string or a number, not null/],
    ['{"PORT": true}', /PORT must be a string or a number, not a boolean/],
  ])("refuses %s with a message naming the file and what was wrong", (text, message) => {
    expect(() => parseConfigFile(text, "tw.json")).toThrow(ConfigError);
    expect(() => parseConfigFile(text, "tw.json")).toThrow(message);
  });
});

describe("settingsInput", () => {
  const file = { PORT: "9000", TRIPWIRE_BATCH_SIZE: "50", HOST: "0.0.0.0" };

  it("takes the file's values where the environment leaves a variable unset or empty", () => {
    const input = settingsInput({ PORT: "9100", HOST: " ", PATH: "/bin" }, file);
    expect(input.env).toMatchObject({
      PORT: "9100",
      TRIPWIRE_BATCH_SIZE: "50",
      HOST: "0.0.0.0",
      PATH: "/bin",
    });
    expect(input.sourceOf("PORT")).toBe("environment");
    expect(input.sourceOf("TRIPWIRE_BATCH_SIZE")).toBe("config file");
    expect(input.sourceOf("HOST")).toBe("config file");
    expect(input.sourceOf("TRIPWIRE_FLUSH_INTERVAL_MS")).toBe("default");
  });

  it("is the environment alone without a config file", () => {
    const input = settingsInput({ PORT: "9100" }, undefined);
    expect(input.env).toEqual({ PORT: "9100" });
    expect(input.sourceOf("HOST")).toBe("default");
  });
});

describe("redaction", () => {
  it.each([
    ["postgres://tw:s3cret@db:5432/tw", "postgres://tw:***@db:5432/tw"],
    [
      "postgres://db/tw?sslmode=require&password=s3cret",
      "postgres://db/tw?sslmode=require&password=***",
    ],
    ["rediss://:s3cret@cache:6380", "rediss://:***@cache:6380"],
    ["postgres://tw@db/tw", "postgres://tw@db/tw"],
    ["/var/lib/tripwire", "/var/lib/tripwire"],
  ])("shows %s as %s", (value, shown) => {
    expect(redactUrl(value)).toBe(shown);
  });

  it("hides the whole value of token, secret and password settings", () => {
    expect(redactSetting("TRIPWIRE_WS_TOKENS", "abc")).toBe("***");
    expect(redactSetting("TRIPWIRE_METRICS_TOKEN", "abc")).toBe("***");
    expect(redactSetting("TRIPWIRE_LOG_LEVEL", "info")).toBe("info");
  });
});

describe("checkConfig", () => {
  it("lists each setting with its source and value, secrets redacted", () => {
    const report = checkConfig(
      settingsInput(
        {
          DATABASE_URL: "postgres://tw:s3cret@db:5432/tw",
          TRIPWIRE_WS_TOKENS: "token-one,token-two",
        },
        { TRIPWIRE_BATCH_SIZE: "50" },
      ),
      "tw.json",
    );
    expect(report).toMatch(
      /^The configuration is valid \(from the environment over config file tw.json/,
    );
    expect(report).toMatch(/^DATABASE_URL +environment +postgres:\/\/tw:\*\*\*@db:5432\/tw$/m);
    expect(report).toMatch(/^TRIPWIRE_WS_TOKENS +environment +\*\*\*,\*\*\*$/m);
    expect(report).toMatch(/^TRIPWIRE_BATCH_SIZE +config file +50$/m);
    expect(report).toMatch(/^PORT +default +8080$/m);
    expect(report).toMatch(/^REDIS_URL +default +\(unset\)$/m);
    expect(report).not.toMatch(/s3cret|token-one|token-two/);
  });

  it("stops at an unreadable TLS file as serve would", () => {
    expect(() =>
      checkConfig(
        settingsInput(
          {
            TRIPWIRE_TLS_CERT: "/nonexistent/server.crt",
            TRIPWIRE_TLS_KEY: "/nonexistent/server.key",
          },
          undefined,
        ),
        undefined,
      ),
    ).toThrow(/TRIPWIRE_TLS_CERT: cannot read \/nonexistent\/server.crt/);
  });
});

describe("the bin", () => {
  it("src/main.ts starts with the node shebang, which tsc keeps in dist/main.js", () => {
    const source = readFileSync(new URL("../../src/main.ts", import.meta.url), "utf8");
    expect(source.split("\n")[0]).toBe("#!/usr/bin/env node");
  });
});
