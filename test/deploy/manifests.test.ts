/**
 * deploy/: the Kubernetes manifest and the Compose file, checked for structure and for agreeing with the server
 * (port 8001, /health, the drain timeout), the image (Dockerfile.cuda's user) and each other; and nginx accepting
 * the shipped nginx.conf (`nginx -t`, addresses replaced).
 */
import { describe, expect, test } from "bun:test";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, posix } from "node:path";
import { parse, parseAllDocuments } from "yaml";
import { REPO_ROOT } from "../helpers/fixtures.ts";
import { findNginx, renderNginxConfig, SHIPPED_NGINX_CONF } from "../helpers/nginx.ts";

// biome-ignore lint/suspicious/noExplicitAny: free-form YAML, checked field by field.
type Doc = any;

const DEFAULT_DRAIN_S = 60;
const K8S = join(REPO_ROOT, "deploy", "k8s", "sdx.yaml");
const COMPOSE = join(REPO_ROOT, "deploy", "compose.yaml");
const dockerfile = await Bun.file(join(REPO_ROOT, "Dockerfile.cuda")).text();
const imageUid = Number(/useradd[^\n]*--uid (\d+)/.exec(dockerfile)?.[1]);

/** SDX_DRAIN_TIMEOUT from a container's env (a k8s list or a Compose map), else the server's default. */
function drainSeconds(env: Doc): number {
  const value = Array.isArray(env)
    ? env.find((e: Doc) => e.name === "SDX_DRAIN_TIMEOUT")?.value
    : env?.SDX_DRAIN_TIMEOUT;
  return value === undefined ? DEFAULT_DRAIN_S : Number(value);
}

/** "75s", "1m30s" or a number of seconds. */
function durationSeconds(value: string | number): number {
  if (typeof value === "number") return value;
  let total = 0;
  for (const [, n, unit] of value.matchAll(/(\d+(?:\.\d+)?)(h|m|s|ms)/g)) {
    total += Number(n) * ({ h: 3600, m: 60, s: 1, ms: 0.001 }[unit as "h" | "m" | "s" | "ms"] ?? 0);
  }
  return total;
}

const matches = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels[k] === v);

const k8sDocuments = parseAllDocuments(await Bun.file(K8S).text());
const compose: Doc = parse(await Bun.file(COMPOSE).text(), { merge: true });
const nginxConf = await Bun.file(SHIPPED_NGINX_CONF).text();

describe("deploy/k8s/sdx.yaml", () => {
  const docs: Doc[] = k8sDocuments.map((d) => d.toJS());
  const byKind = (kind: string): Doc => docs.find((d) => d?.kind === kind);
  const deployment = byKind("Deployment");
  const pod = deployment?.spec?.template?.spec;
  const container = pod?.containers?.[0];
  const podLabels = deployment?.spec?.template?.metadata?.labels ?? {};

  test("has a Deployment, a Service, a PodDisruptionBudget and the models claim", () => {
    for (const d of k8sDocuments) expect(d.errors).toEqual([]);
    expect(docs.map((d) => d.kind).sort()).toEqual(
      ["Deployment", "PersistentVolumeClaim", "PodDisruptionBudget", "Service"].sort(),
    );
    for (const d of docs) expect(d.apiVersion).toBeString();
    expect(deployment.spec.replicas).toBeGreaterThanOrEqual(2);
  });

  test("each replica gets one GPU", () => {
    expect(Number(container.resources.limits["nvidia.com/gpu"])).toBe(1);
  });

  test("liveness and readiness ask /health on port 8001; readiness needs a ready model", () => {
    const port = (p: string | number) =>
      typeof p === "number" ? p : container.ports.find((x: Doc) => x.name === p)?.containerPort;
    expect(container.ports.map((p: Doc) => p.containerPort)).toContain(8001);
    const live = container.livenessProbe.httpGet;
    expect(live.path).toBe("/health");
    expect(port(live.port)).toBe(8001);
    // /health answers 200 while loading and with no model: readiness reads the status instead.
    const ready = container.readinessProbe;
    const command: string[] = ready.httpGet ? [] : ready.exec.command;
    if (ready.httpGet) {
      expect(ready.httpGet.path).toBe("/health");
      expect(port(ready.httpGet.port)).toBe(8001);
    } else {
      expect(command).toContain("--ready");
      expect(command).toContain("http://127.0.0.1:8001/health");
      // The script the probe runs is in the image (Dockerfile.cuda copies scripts/healthcheck.ts to /app).
      const script = command.find((c) => c.endsWith(".ts")) ?? "";
      expect(script.startsWith("/app/")).toBe(true);
      expect(existsSync(join(REPO_ROOT, posix.relative("/app", script)))).toBe(true);
      expect(dockerfile).toContain(`COPY ${posix.relative("/app", script)} `);
    }
  });

  test("the grace period covers preStop and the drain", () => {
    const preStop: string[] = container.lifecycle.preStop.exec.command;
    const preStopS = preStop[0] === "sleep" ? Number(preStop[1]) : 0;
    expect(preStopS).toBeGreaterThan(0);
    const drain = drainSeconds(container.env);
    expect(pod.terminationGracePeriodSeconds).toBeGreaterThan(preStopS + drain + 2);
  });

  test("the API key comes from a Secret", () => {
    const key = container.env.find((e: Doc) => e.name === "SDX_API_KEY");
    expect(key.value).toBeUndefined();
    expect(key.valueFrom.secretKeyRef).toMatchObject({ name: expect.any(String), key: expect.any(String) });
  });

  test("selectors match the pods; the Service reaches port 8001; models come from the claim", () => {
    expect(matches(deployment.spec.selector.matchLabels, podLabels)).toBe(true);
    expect(matches(byKind("PodDisruptionBudget").spec.selector.matchLabels, podLabels)).toBe(true);
    expect(byKind("PodDisruptionBudget").spec.minAvailable).toBeLessThan(deployment.spec.replicas);
    const service = byKind("Service");
    expect(matches(service.spec.selector, podLabels)).toBe(true);
    const target = service.spec.ports[0].targetPort;
    expect(
      typeof target === "number"
        ? target
        : container.ports.find((p: Doc) => p.name === target)?.containerPort,
    ).toBe(8001);
    const mount = container.volumeMounts.find((m: Doc) => m.mountPath === "/app/models");
    const volume = pod.volumes.find((v: Doc) => v.name === mount.name);
    expect(volume.persistentVolumeClaim.claimName).toBe(byKind("PersistentVolumeClaim").metadata.name);
  });

  test("runs as the image's non-root user", () => {
    expect(imageUid).toBeGreaterThan(0);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: imageUid });
  });
});

describe("deploy/compose.yaml and deploy/nginx.conf", () => {
  const replicas = Object.keys(compose.services).filter((name) => name !== "nginx");

  test("two sdx replicas from Dockerfile.cuda, each with a GPU and the API key, given time to drain", () => {
    expect(replicas).toHaveLength(2);
    for (const name of replicas) {
      const service = compose.services[name];
      expect(service.build.dockerfile).toBe("Dockerfile.cuda");
      expect(existsSync(join(REPO_ROOT, "deploy", service.build.context, service.build.dockerfile))).toBe(
        true,
      );
      const devices = service.deploy.resources.reservations.devices;
      expect(devices[0]).toMatchObject({ driver: "nvidia", capabilities: ["gpu"] });
      expect(service.environment.SDX_API_KEY).toStartWith("${SDX_API_KEY:?");
      expect(service.volumes.some((v: string) => v.endsWith(":/app/models"))).toBe(true);
      expect(durationSeconds(service.stop_grace_period)).toBeGreaterThan(
        drainSeconds(service.environment) + 2,
      );
    }
  });

  test("nginx mounts the shipped config and sends to both replicas on 8001", () => {
    const nginx = compose.services.nginx;
    expect(nginx.image).toMatch(/^nginx:\d/);
    expect(nginx.volumes).toContain("./nginx.conf:/etc/nginx/nginx.conf:ro");
    expect([...nginx.depends_on].sort()).toEqual([...replicas].sort());
    const upstreams = [...nginxConf.matchAll(/^\s*server\s+([\w.-]+):(\d+)/gm)].map((m) => `${m[1]}:${m[2]}`);
    expect(upstreams.sort()).toEqual(replicas.map((r) => `${r}:8001`).sort());
    const listen = /^\s*listen\s+(\d+);/m.exec(nginxConf)?.[1];
    expect(nginx.ports.map((p: string) => p.split(":").at(-1))).toContain(listen);
  });

  test("nginx streams server-sent events and passes a draining replica's 503 on, POST included", () => {
    const directive = (name: string) =>
      new RegExp(`^\\s*${name}\\s+([^;]+);`, "m").exec(nginxConf)?.[1]?.split(/\s+/) ?? [];
    expect(directive("proxy_buffering")).toEqual(["off"]);
    expect(durationSeconds(directive("proxy_read_timeout")[0] ?? "0")).toBeGreaterThanOrEqual(600);
    expect(directive("proxy_next_upstream")).toEqual(
      expect.arrayContaining(["error", "http_503", "non_idempotent"]),
    );
  });

  test("nginx -t accepts the shipped config", async () => {
    const nginx = findNginx();
    if (!nginx)
      throw new Error("nginx is not installed (Debian: apt-get install nginx; .ci/run installs it)");
    const dir = await mkdtemp(join(tmpdir(), "sdx-nginx-t-"));
    try {
      const conf = renderNginxConfig(nginxConf, {
        upstreams: ["127.0.0.1:1", "127.0.0.1:2"],
        listen: "127.0.0.1:18080",
        dir,
      });
      await Bun.write(join(dir, "nginx.conf"), conf);
      const globals = `pid ${join(dir, "nginx.pid")};${process.getuid?.() === 0 ? " user root;" : ""}`;
      const run = Bun.spawnSync([
        nginx,
        "-t",
        "-p",
        dir,
        "-c",
        join(dir, "nginx.conf"),
        "-e",
        join(dir, "e.log"),
        "-g",
        globals,
      ]);
      expect({ exit: run.exitCode, stderr: run.stderr.toString() }).toMatchObject({ exit: 0 });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
