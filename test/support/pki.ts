/**
 * A throwaway PKI generated at test time with the `openssl` command: the agents' CA, an
 * unrelated CA, a server certificate for 127.0.0.1/localhost, agent certificates with
 * CN = hostname, and an agent certificate that has expired.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  type CertificateAuthority,
  createCertificateAuthority,
  type IssuedCertificate,
  issueCertificate,
} from "../../src/cli/dev-pki.js";

/** PEM contents of a certificate and key, as TLS clients take them. */
export interface KeyPair {
  readonly cert: string;
  readonly key: string;
  readonly certPath: string;
  readonly keyPath: string;
}

/** The generated PKI; `dispose()` deletes its directory. */
export interface TestPki {
  /** The agents' CA: its certificate is the server's client CA and the clients' trust root. */
  readonly caPath: string;
  readonly ca: string;
  readonly server: KeyPair;
  /** An agent certificate issued by the agents' CA with CN = `hostname`. */
  agent(hostname: string): Promise<KeyPair>;
  /** An agent certificate with CN = `hostname` issued by a CA the server does not trust. */
  foreignAgent(hostname: string): Promise<KeyPair>;
  /** An agent certificate from the agents' CA whose validity ended yesterday. */
  expiredAgent(hostname: string): Promise<KeyPair>;
  dispose(): Promise<void>;
}

/** Generates a fresh PKI in a temporary directory. */
export async function createTestPki(): Promise<TestPki> {
  const root = await mkdtemp(join(tmpdir(), "tripwire-pki-"));
  const [agentsCa, foreignCa] = await Promise.all([
    createCertificateAuthority(join(root, "agents-ca"), "TripWire Test Agents CA", 2),
    createCertificateAuthority(join(root, "foreign-ca"), "Unrelated Test CA", 2),
  ]);
  const server = await load(
    await issueCertificate(agentsCa, {
      name: "server",
      commonName: "localhost",
      usage: "server",
      dnsNames: ["localhost"],
      ipAddresses: ["127.0.0.1"],
      validity: { days: 2 },
    }),
  );
  const ca = await readFile(agentsCa.certPath, "utf8");
  let serial = 0;
  const client = async (
    authority: CertificateAuthority,
    hostname: string,
    validity: { days: number } | { from: Date; until: Date },
  ): Promise<KeyPair> =>
    load(
      await issueCertificate(authority, {
        name: `agent-${++serial}`,
        commonName: hostname,
        usage: "client",
        validity,
      }),
    );
  const day = 86_400_000;
  return {
    caPath: agentsCa.certPath,
    ca,
    server,
    agent: (hostname) => client(agentsCa, hostname, { days: 2 }),
    foreignAgent: (hostname) => client(foreignCa, hostname, { days: 2 }),
    expiredAgent: (hostname) =>
      client(agentsCa, hostname, {
        from: new Date(Date.now() - 3 * day),
        until: new Date(Date.now() - day),
      }),
    dispose: () => rm(root, { recursive: true, force: true }),
  };
}

async function load(issued: IssuedCertificate): Promise<KeyPair> {
  const [cert, key] = await Promise.all([
    readFile(issued.certPath, "utf8"),
    readFile(issued.keyPath, "utf8"),
  ]);
  return { cert, key, ...issued };
}
