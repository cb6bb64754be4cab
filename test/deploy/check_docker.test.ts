/**
 * `bun run check:docker` (scripts/check_docker.ts): passes the shipped Dockerfile.cuda, and fails each broken
 * variant written to a temp dir (lint errors and warnings, missing or .dockerignored COPY sources, unknown
 * scripts, entry files that are missing or not copied, files they import left out, unpinned bases, root, no
 * HEALTHCHECK or EXPOSE 8001).
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { checkDockerfile, isDockerignored, readDockerignore } from "../../scripts/check_docker.ts";
import { REPO_ROOT } from "../helpers/fixtures.ts";

const SHIPPED = await Bun.file(join(REPO_ROOT, "Dockerfile.cuda")).text();

let tmp: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "sdx-check-docker-"));
});
afterAll(() => rm(tmp, { recursive: true, force: true }));

let count = 0;
/** The problems check:docker finds in `text` (checked against `root`, the repository by default). */
async function problemsOf(text: string, root = REPO_ROOT): Promise<string[]> {
  const path = join(tmp, `Dockerfile.${++count}`);
  await Bun.write(path, text);
  return (await checkDockerfile(path, root)).map((p) => `${p.line}: ${p.message}`);
}

/** The shipped Dockerfile with `from` replaced by `to` (which must occur). */
function broken(from: string | RegExp, to: string): string {
  const text = SHIPPED.replace(from, to);
  if (text === SHIPPED) throw new Error(`Dockerfile.cuda has no ${from}`);
  return text;
}

describe("check:docker", () => {
  test("the shipped Dockerfile.cuda passes, and the command says so", async () => {
    expect(await problemsOf(SHIPPED)).toEqual([]);
    const run = Bun.spawnSync(["bun", join(REPO_ROOT, "scripts/check_docker.ts")], { cwd: REPO_ROOT });
    expect({ exit: run.exitCode, stderr: run.stderr.toString() }).toEqual({ exit: 0, stderr: "" });
  });

  test("dockerfile-utils errors and warnings fail it", async () => {
    expect(await problemsOf(broken("STOPSIGNAL SIGTERM", "STOPSIGNL SIGTERM"))).toEqual([
      expect.stringMatching(/^\d+: dockerfile-utils error: .*STOPSIGNL/i),
    ]);
    expect(await problemsOf(broken("EXPOSE 8001", "expose 8001"))).toEqual([
      expect.stringMatching(/dockerfile-utils warning: .*uppercase/i),
    ]);
    expect(await problemsOf(broken("--interval=30s", "--interval=30x"))).toEqual([
      expect.stringMatching(/dockerfile-utils error/),
    ]);
  });

  test("a COPY source missing from the repository", async () => {
    const problems = await problemsOf(broken("COPY api ./api", "COPY api ./api\nCOPY sdk/missing.ts ./sdk/"));
    expect(problems).toEqual([expect.stringMatching(/COPY source "sdk\/missing.ts" does not exist/)]);
  });

  test("a COPY source that .dockerignore leaves out", async () => {
    const root = join(tmp, "repo");
    for (const dir of ["api", "contract", "lib", "scripts"])
      await mkdir(join(root, dir), { recursive: true });
    for (const file of [
      "package.json",
      "bun.lock",
      "bunfig.toml",
      "api/index.ts",
      "contract/index.ts",
      "lib/version.ts",
      "scripts/healthcheck.ts",
    ]) {
      await Bun.write(join(root, file), await Bun.file(join(REPO_ROOT, file)).text());
    }
    await Bun.write(join(root, ".dockerignore"), await Bun.file(join(REPO_ROOT, ".dockerignore")).text());
    expect(await problemsOf(SHIPPED, root)).toEqual([]);
    await Bun.write(
      join(root, ".dockerignore"),
      "*\n!package.json\n!bun.lock\n!bunfig.toml\n!contract/\n!lib/\n!api/\n",
    );
    expect(await problemsOf(SHIPPED, root)).toEqual([
      expect.stringMatching(/COPY source "scripts\/healthcheck.ts" is excluded by .dockerignore/),
      // …and so the image would lack what HEALTHCHECK runs.
      expect.stringMatching(/HEALTHCHECK runs "scripts\/healthcheck.ts" .*which no COPY puts in the image/),
    ]);
  });

  test("`bun run` of a script package.json lacks", async () => {
    const problems = await problemsOf(
      broken(
        "RUN bun install --frozen-lockfile --production",
        "RUN bun run build-cuda && bun install --frozen-lockfile --production",
      ),
    );
    expect(problems).toEqual([expect.stringMatching(/"bun run build-cuda": package.json has no script/)]);
    // A script that exists is fine.
    expect(await problemsOf(broken('CMD ["bun", "api/index.ts"]', 'CMD ["bun", "run", "start"]'))).toEqual(
      [],
    );
  });

  test("CMD and HEALTHCHECK files that do not exist or are not copied in", async () => {
    expect(await problemsOf(broken('CMD ["bun", "api/index.ts"]', 'CMD ["bun", "api/main.ts"]'))).toEqual([
      expect.stringMatching(/CMD runs "api\/main.ts", but api\/main.ts does not exist/),
    ]);
    expect(await problemsOf(broken(/COPY scripts\/healthcheck.ts [^\n]*\n/, ""))).toEqual([
      expect.stringMatching(
        /HEALTHCHECK runs "scripts\/healthcheck.ts" \(\/app\/scripts\/healthcheck.ts\), which no COPY/,
      ),
    ]);
  });

  test("every project file the server imports is copied in too (contract/, lib/, package.json)", async () => {
    const problems = await problemsOf(broken("COPY lib ./lib\n", ""));
    expect(problems.length).toBeGreaterThan(0);
    for (const p of problems)
      expect(p).toMatch(/CMD runs "api\/index.ts", which imports lib\/\S+\.ts, but no COPY/);
    expect(problems).toContainEqual(expect.stringMatching(/imports lib\/version.ts/));
  });

  test("base images must be pinned", async () => {
    const latest = await problemsOf(
      broken("nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04", "nvidia/cuda:latest"),
    );
    expect(latest).toEqual([expect.stringMatching(/base image "nvidia\/cuda:latest" is not pinned/)]);
    const bare = await problemsOf(broken("nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04", "nvidia/cuda"));
    expect(bare).toEqual([expect.stringMatching(/base image "nvidia\/cuda" is not pinned/)]);
    const unset = await problemsOf(broken("ARG BUN_VERSION=1.4.5", "ARG BUN_VERSION"));
    expect(unset).toEqual([
      expect.stringMatching(/"oven\/bun:\$\{BUN_VERSION\}" uses a variable with no default/),
    ]);
    const digest = `nvidia/cuda@sha256:${"0".repeat(64)}`;
    expect(await problemsOf(broken("nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04", digest))).toEqual([]);
  });

  test("the final stage must not run as root", async () => {
    expect(await problemsOf(broken("USER sdx", "USER root"))).toEqual([
      expect.stringMatching(/USER root runs the server as root/),
    ]);
    expect(await problemsOf(broken("USER sdx", "USER 0:0"))).toEqual([
      expect.stringMatching(/USER 0:0 runs the server as root/),
    ]);
    expect(await problemsOf(broken("USER sdx\n", ""))).toEqual([expect.stringMatching(/sets no USER/)]);
  });

  test("the final stage needs a HEALTHCHECK and EXPOSE 8001", async () => {
    expect(await problemsOf(broken(/HEALTHCHECK [^\n]*\\\n[^\n]*\n/, "HEALTHCHECK NONE\n"))).toEqual([
      expect.stringMatching(/no HEALTHCHECK/),
    ]);
    expect(await problemsOf(broken("EXPOSE 8001", "EXPOSE 8080"))).toEqual([
      expect.stringMatching(/does not EXPOSE 8001/),
    ]);
  });

  test("the command prints file:line for each problem and exits 1", async () => {
    const path = join(tmp, "Dockerfile.bad");
    await Bun.write(path, broken("USER sdx", "USER root"));
    const run = Bun.spawnSync(["bun", join(REPO_ROOT, "scripts/check_docker.ts"), "--root", REPO_ROOT, path]);
    expect(run.exitCode).toBe(1);
    expect(run.stderr.toString()).toMatch(/Dockerfile\.bad:\d+: USER root runs the server as root/);
  });
});

describe(".dockerignore as Docker reads it", () => {
  const patterns = readDockerignore("# comment\n*\n!api/\n!scripts/healthcheck.ts\n**/*.tmp\n/models\n");

  test("the last matching pattern decides, for a path or any of its parents", () => {
    expect(isDockerignored("package.json", patterns)).toBe(true);
    expect(isDockerignored("node_modules/x/index.js", patterns)).toBe(true);
    expect(isDockerignored("api", patterns)).toBe(false);
    expect(isDockerignored("api/engine/model_host.ts", patterns)).toBe(false);
    expect(isDockerignored("api/engine/x.tmp", patterns)).toBe(true);
    expect(isDockerignored("scripts/healthcheck.ts", patterns)).toBe(false);
    expect(isDockerignored("scripts/check_docker.ts", patterns)).toBe(true);
    expect(isDockerignored("models/a/model.onnx", patterns)).toBe(true);
    expect(isDockerignored(".", patterns)).toBe(false);
  });
});
