// Reads vitest's JSON report and fails when a test was skipped, left as todo, or when
// the variants that need a real service (PostgreSQL) did not run.
import { readFileSync } from "node:fs";

const report = JSON.parse(readFileSync(process.argv[2], "utf8"));
const tests = report.testResults.flatMap((file) =>
  file.assertionResults.map((t) => ({ file: file.name, name: t.fullName, status: t.status })),
);
const notRun = tests.filter((t) => t.status !== "passed" && t.status !== "failed");
const failed = tests.filter((t) => t.status === "failed");
const required = [
  { service: "PostgreSQL", marker: "[postgres]" },
  { service: "Redis", marker: "[redis]" },
  { service: "Chromium", marker: "[chromium]" },
];

let ok = report.success === true && failed.length === 0;
if (notRun.length > 0) {
  ok = false;
  console.error(`${notRun.length} test(s) did not run (skipped/todo/pending):`);
  for (const t of notRun) console.error(`  ${t.status}: ${t.name} (${t.file})`);
}
for (const { service, marker } of required) {
  const ran = tests.filter((t) => t.name.includes(marker) && t.status === "passed").length;
  if (ran === 0) {
    ok = false;
    console.error(`no test against ${service} ran (none named with ${marker})`);
  } else {
    console.log(`${ran} tests ran against ${service}`);
  }
}
console.log(
  `${tests.filter((t) => t.status === "passed").length} passed, ${failed.length} failed, ${notRun.length} skipped`,
);
process.exit(ok ? 0 : 1);
