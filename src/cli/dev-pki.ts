/**
 * A small certificate authority driven by the `openssl` command: development certificates
 * for `npm run certs` and throwaway ones for tests. Not for production PKI: keys are
 * written unencrypted (mode 0600) next to the certificates.
 *
 * Certificates are issued with `openssl ca`, which (unlike `openssl x509 -req` in
 * OpenSSL 3.0) accepts explicit start and end dates, so tests can issue expired ones.
 */
import { execFile } from "node:child_process";
import { chmod, mkdir, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** A CA whose certificate and key live in `dir`. */
export interface CertificateAuthority {
  readonly dir: string;
  readonly certPath: string;
  readonly keyPath: string;
  /** Issuance through one CA is serialized: `openssl ca` keeps its index in a file. */
  queue: Promise<unknown>;
}

/** A certificate and its private key, as PEM files. */
export interface IssuedCertificate {
  readonly certPath: string;
  readonly keyPath: string;
}

/** What to put in a certificate issued by `issueCertificate`. */
export interface CertificateRequest {
  /** File stem in the CA directory: `<name>.crt` and `<name>.key`. */
  readonly name: string;
  readonly commonName: string;
  /** `server` for TLS servers (with SANs), `client` for agents. */
  readonly usage: "server" | "client";
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  /** Validity: a number of days from now (default 825), or explicit dates. */
  readonly validity?: { readonly days: number } | { readonly from: Date; readonly until: Date };
}

const reqConfig = `[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
`;

/** Creates a self-signed CA in `dir` (created if missing). */
export async function createCertificateAuthority(
  dir: string,
  commonName: string,
  days = 3650,
): Promise<CertificateAuthority> {
  await mkdir(join(dir, "issued"), { recursive: true });
  const certPath = join(dir, "ca.crt");
  const keyPath = join(dir, "ca.key");
  await writeFile(join(dir, "req.cnf"), reqConfig);
  await writeFile(join(dir, "index.txt"), "");
  // biome-ignore format: one flag and its value per line
  await openssl([
    "req", "-x509", "-new", "-config", join(dir, "req.cnf"), "-extensions", "v3_ca",
    "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", keyPath, "-out", certPath, "-subj", subject(commonName), "-days", String(days),
  ]);
  await chmod(keyPath, 0o600);
  return { dir, certPath, keyPath, queue: Promise.resolve() };
}

/** Opens a CA that `createCertificateAuthority` made earlier in `dir`. */
export function openCertificateAuthority(dir: string): CertificateAuthority {
  return {
    dir,
    certPath: join(dir, "ca.crt"),
    keyPath: join(dir, "ca.key"),
    queue: Promise.resolve(),
  };
}

/** Issues a certificate signed by `ca`, with a fresh P-256 key, into the CA directory. */
export function issueCertificate(
  ca: CertificateAuthority,
  request: CertificateRequest,
): Promise<IssuedCertificate> {
  const issued = ca.queue.then(() => issue(ca, request));
  ca.queue = issued.catch(() => {});
  return issued;
}

async function issue(
  ca: CertificateAuthority,
  request: CertificateRequest,
): Promise<IssuedCertificate> {
  if (!/^[A-Za-z0-9._-]+$/.test(request.name)) {
    throw new Error(`certificate name ${JSON.stringify(request.name)}: use letters, digits, . _ -`);
  }
  const base = join(ca.dir, request.name);
  const certPath = `${base}.crt`;
  const keyPath = `${base}.key`;
  const csrPath = `${base}.csr`;
  const extPath = `${base}.ext`;
  await writeFile(extPath, extensions(request));
  // Absolute paths, written at each use, so the directory may be moved or used from elsewhere.
  await writeFile(join(ca.dir, "ca.cnf"), caConfig(resolve(ca.dir)));
  // biome-ignore format: one flag and its value per line
  await openssl([
    "req", "-new", "-config", join(ca.dir, "req.cnf"),
    "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
    "-keyout", keyPath, "-out", csrPath, "-subj", subject(request.commonName),
  ]);
  await chmod(keyPath, 0o600);
  const validity = request.validity ?? { days: 825 };
  const dates =
    "days" in validity
      ? ["-days", String(validity.days)]
      : ["-startdate", asn1Time(validity.from), "-enddate", asn1Time(validity.until)];
  // biome-ignore format: one flag and its value per line
  await openssl([
    "ca", "-batch", "-notext", "-config", join(ca.dir, "ca.cnf"),
    "-in", csrPath, "-out", certPath, "-extfile", extPath, "-extensions", "leaf",
    "-subj", subject(request.commonName), ...dates,
  ]);
  await Promise.all([rm(csrPath, { force: true }), rm(extPath, { force: true })]);
  return { certPath, keyPath };
}

function caConfig(dir: string): string {
  return `[ca]
default_ca = ca_default
[ca_default]
database = ${join(dir, "index.txt")}
new_certs_dir = ${join(dir, "issued")}
certificate = ${join(dir, "ca.crt")}
private_key = ${join(dir, "ca.key")}
rand_serial = yes
default_md = sha256
policy = policy_any
unique_subject = no
email_in_dn = no
copy_extensions = none
[policy_any]
commonName = supplied
`;
}

function extensions(request: CertificateRequest): string {
  const lines = [
    "[leaf]",
    "basicConstraints = critical, CA:FALSE",
    "keyUsage = critical, digitalSignature",
    `extendedKeyUsage = ${request.usage === "server" ? "serverAuth" : "clientAuth"}`,
    "subjectKeyIdentifier = hash",
    "authorityKeyIdentifier = keyid",
  ];
  const names = [
    ...(request.dnsNames ?? []).map((n) => `DNS:${n}`),
    ...(request.ipAddresses ?? []).map((ip) => `IP:${ip}`),
  ];
  if (names.length > 0) lines.push(`subjectAltName = ${names.join(", ")}`);
  return `${lines.join("\n")}\n`;
}

/** `/CN=…` with the characters that are special in openssl's -subj syntax escaped. */
function subject(commonName: string): string {
  if (commonName === "" || commonName.length > 64) {
    throw new Error("a certificate common name must be 1 to 64 characters");
  }
  return `/CN=${commonName.replace(/[\\/+=,]/g, (c) => `\\${c}`)}`;
}

/** YYYYMMDDHHMMSSZ, the GeneralizedTime form `openssl ca -startdate/-enddate` accept. */
function asn1Time(date: Date): string {
  return `${date.toISOString().replace(/[-:T]/g, "").slice(0, 14)}Z`;
}

async function openssl(args: readonly string[]): Promise<void> {
  try {
    await run("openssl", args, { timeout: 30_000 });
  } catch (err) {
    const stderr = (err as { stderr?: string }).stderr ?? "";
    throw new Error(`openssl ${args[0]} failed: ${stderr.trim() || (err as Error).message}`);
  }
}
