/**
 * `npm run certs -- [options] [agent-hostname…]`: a development PKI for TLS and agent
 * certificates, made with the `openssl` command in a git-ignored directory.
 *
 * Creates (or reuses) a CA, a server certificate for localhost, and one client
 * certificate per agent hostname (CN = hostname, which is how the server names the
 * agent). Exit code 0 on success, 1 when openssl failed, 2 for bad flags.
 */
import { existsSync } from "node:fs";
import { chmod, mkdir } from "node:fs/promises";
import { hostname } from "node:os";
import { join, relative } from "node:path";
import { parseArgs } from "node:util";
import {
  createCertificateAuthority,
  issueCertificate,
  openCertificateAuthority,
} from "./dev-pki.js";

const usage = `Usage: npm run certs -- [options] [agent-hostname ...]

Creates a development PKI with openssl: a CA, a server certificate and one client
certificate per agent hostname (CN = hostname; default: this machine's hostname).
An existing CA in the directory is reused, so running it again adds agents.

Options:
  --out DIR            directory for the files (default .data/certs, git-ignored)
  --server-name NAME   extra DNS name or IP address for the server certificate
                       (repeatable; localhost, 127.0.0.1 and ::1 are always included)
  --new-server         issue the server certificate again even if it exists
  --help               show this help

The keys are written unencrypted (mode 0600): for development only. In production,
issue agent certificates from a CA whose key stays off the server.
`;

/** A flag that is not acceptable; the message names it. */
class UsageError extends Error {
  override readonly name = "UsageError";
}

const ipPattern = /^(\d{1,3}(\.\d{1,3}){3}|[0-9a-fA-F:]*:[0-9a-fA-F:]*)$/;
const namePattern = /^[A-Za-z0-9._-]{1,64}$/;

async function main(argv: readonly string[]): Promise<number> {
  const { values, positionals } = parse(argv);
  if (values.help === true) {
    process.stdout.write(usage);
    return 0;
  }
  const out = values.out ?? ".data/certs";
  const agents = positionals.length > 0 ? positionals : [hostname()];
  for (const name of agents) {
    if (!namePattern.test(name)) {
      throw new UsageError(
        `agent hostname ${JSON.stringify(name)} is not valid: expected 1 to 64 letters, digits, . _ -`,
      );
    }
  }
  for (const name of values["server-name"] ?? []) {
    if (!namePattern.test(name) && !ipPattern.test(name)) {
      throw new UsageError(
        `--server-name ${JSON.stringify(name)} is not valid: expected a DNS name or an IP address`,
      );
    }
  }

  await mkdir(out, { recursive: true, mode: 0o700 });
  await chmod(out, 0o700);
  const ca = existsSync(join(out, "ca.key"))
    ? openCertificateAuthority(out)
    : await createCertificateAuthority(out, "TripWire Development CA");
  const serverNames = ["localhost", ...(values["server-name"] ?? [])];
  if (values["new-server"] === true || !existsSync(join(out, "server.crt"))) {
    await issueCertificate(ca, {
      name: "server",
      commonName: "localhost",
      usage: "server",
      dnsNames: serverNames.filter((n) => !ipPattern.test(n)),
      ipAddresses: ["127.0.0.1", "::1", ...serverNames.filter((n) => ipPattern.test(n))],
    });
  }
  for (const agent of agents) {
    await issueCertificate(ca, { name: `agent-${agent}`, commonName: agent, usage: "client" });
  }

  const at = (file: string): string => relative(process.cwd(), join(out, file)) || file;
  process.stdout.write(`Development PKI in ${out}/

Server (add to the environment):
  TRIPWIRE_TLS_CERT=${at("server.crt")}
  TRIPWIRE_TLS_KEY=${at("server.key")}
  TRIPWIRE_TLS_CLIENT_CA=${at("ca.crt")}

Agents (trust ${at("ca.crt")} for the server; CN = hostname):
${agents.map((a) => `  ${a}: ${at(`agent-${a}.crt`)} ${at(`agent-${a}.key`)}`).join("\n")}
`);
  return 0;
}

function parse(argv: readonly string[]) {
  try {
    return parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        out: { type: "string" },
        "server-name": { type: "string", multiple: true },
        "new-server": { type: "boolean" },
        help: { type: "boolean" },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) {
      process.stderr.write(`certs: ${err.message}\n\n${usage}`);
      process.exitCode = 2;
      return;
    }
    process.stderr.write(`certs failed: ${err instanceof Error ? err.message : err}\n`);
    process.exitCode = 1;
  },
);
