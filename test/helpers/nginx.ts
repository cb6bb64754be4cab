/**
 * Runs the shipped deploy/nginx.conf as the current user on loopback: only the upstream addresses, the listen
 * address, the logs and the temp paths are replaced, and two headers naming the upstream(s) each answer came
 * from are added, so tests see where nginx sent a request and whether it retried.
 */
import { existsSync, mkdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { REPO_ROOT } from "./fixtures.ts";

export const SHIPPED_NGINX_CONF = join(REPO_ROOT, "deploy", "nginx.conf");

/** The nginx binary (Debian puts it in /usr/sbin, often not on a user's PATH), or null. */
export function findNginx(): string | null {
  return (
    Bun.which("nginx") ?? ["/usr/sbin/nginx", "/usr/local/sbin/nginx"].find((p) => existsSync(p)) ?? null
  );
}

/** deploy/nginx.conf with its upstream servers, listen address, logs and temp paths replaced for a test. */
export function renderNginxConfig(
  shipped: string,
  options: { upstreams: string[]; listen: string; dir: string },
): string {
  const servers = [...shipped.matchAll(/^([ \t]*)server[ \t]+(\S+)(.*);[ \t]*$/gm)];
  if (servers.length !== options.upstreams.length) {
    throw new Error(
      `deploy/nginx.conf has ${servers.length} upstream servers; the test runs ${options.upstreams.length}`,
    );
  }
  let i = 0;
  let text = shipped.replace(
    /^([ \t]*)server[ \t]+(\S+)(.*);[ \t]*$/gm,
    (_, indent: string, _addr: string, params: string) =>
      `${indent}server ${options.upstreams[i++]}${params};`,
  );
  const replace = (pattern: RegExp, by: string) => {
    if (!pattern.test(text)) throw new Error(`deploy/nginx.conf has no ${pattern}`);
    text = text.replace(pattern, by);
  };
  replace(/^(\s*)listen\s+\S+;/m, `$1listen ${options.listen};`);
  replace(/^(\s*)error_log\s+[^;]+;/m, `$1error_log ${join(options.dir, "error.log")} info;`);
  replace(/^(\s*)access_log\s+[^;]+;/m, `$1access_log ${join(options.dir, "access.log")};`);
  const temp = ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"]
    .map((kind) => `  ${kind}_temp_path ${join(options.dir, `${kind}_temp`)};`)
    .join("\n");
  replace(/^http\s*\{/m, `http {\n${temp}`);
  replace(
    /^(\s*)proxy_pass\s+[^;]+;/m,
    "$&\n$1add_header X-Upstream-Addr $upstream_addr always;\n$1add_header X-Upstream-Status $upstream_status always;",
  );
  return text;
}

export interface RunningNginx {
  url: string;
  dir: string;
  process: Subprocess<"ignore", "pipe", "pipe">;
  log: () => Promise<string>;
  stop: () => Promise<void>;
}

/** A free loopback port (asked of the kernel, then released). */
function freePort(): number {
  const server = Bun.serve({ hostname: "127.0.0.1", port: 0, fetch: () => new Response() });
  const port = server.port as number;
  server.stop(true);
  return port;
}

/** Starts nginx with the shipped config in front of `upstreams` ("127.0.0.1:PORT") and waits until it answers. */
export async function startNginx(upstreams: string[]): Promise<RunningNginx> {
  const nginx = findNginx();
  if (!nginx) {
    throw new Error("nginx is not installed (Debian: apt-get install nginx; .ci/run installs it)");
  }
  const dir = await mkdtemp(join(tmpdir(), "sdx-nginx-"));
  for (const kind of ["client_body", "proxy", "fastcgi", "uwsgi", "scgi"])
    mkdirSync(join(dir, `${kind}_temp`));
  const port = freePort();
  const config = renderNginxConfig(await Bun.file(SHIPPED_NGINX_CONF).text(), {
    upstreams,
    listen: `127.0.0.1:${port}`,
    dir,
  });
  await Bun.write(join(dir, "nginx.conf"), config);
  // As root nginx would hand its workers to "nobody"; keep them the current user, like the master.
  const globals = `daemon off; pid ${join(dir, "nginx.pid")};${process.getuid?.() === 0 ? " user root;" : ""}`;
  const proc = Bun.spawn(
    [nginx, "-p", dir, "-c", join(dir, "nginx.conf"), "-e", join(dir, "error.log"), "-g", globals],
    {
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    },
  );
  const log = async () => {
    const file = Bun.file(join(dir, "error.log"));
    return (await file.exists()) ? file.text() : "";
  };
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 15_000;
  while (true) {
    if (proc.exitCode !== null) {
      throw new Error(
        `nginx exited with ${proc.exitCode}:\n${await new Response(proc.stderr).text()}\n${await log()}`,
      );
    }
    const answered = await fetch(`${url}/health`).then(
      () => true,
      () => false,
    );
    if (answered) break;
    if (Date.now() > deadline) throw new Error(`nginx did not answer on ${url}:\n${await log()}`);
    await Bun.sleep(50);
  }
  return {
    url,
    dir,
    process: proc,
    log,
    stop: async () => {
      proc.kill("SIGQUIT");
      const exited = await Promise.race([proc.exited.then(() => true), Bun.sleep(5000).then(() => false)]);
      if (!exited) {
        proc.kill("SIGKILL");
        await proc.exited;
      }
      await rm(dir, { recursive: true, force: true });
    },
  };
}
