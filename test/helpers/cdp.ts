/**
 * Headless Debian Chromium (./chromium.ts) driven over the Chrome DevTools Protocol: JSON messages over Bun's
 * WebSocket to the browser, one flat session per page (Target.attachToTarget with `flatten`). Pages navigate,
 * evaluate, click and type with real input events, record every request they make and every console message,
 * and take screenshots. Background networking is off, so nothing outside the machine is reached on the
 * browser's behalf.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CHROMIUM, CHROMIUM_FLAGS } from "./chromium.ts";

interface Message {
  id?: number;
  method?: string;
  params?: Record<string, unknown>;
  sessionId?: string;
  result?: unknown;
  error?: { message: string };
}

/** One WebSocket to the browser; commands are answered by id, events go to every listener. */
class Connection {
  private next = 1;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  readonly listeners = new Set<(m: Message) => void>();

  constructor(private readonly ws: WebSocket) {
    ws.addEventListener("message", (event) => {
      const message = JSON.parse(String(event.data)) as Message;
      if (message.id !== undefined) {
        const waiter = this.pending.get(message.id);
        this.pending.delete(message.id);
        if (message.error) waiter?.reject(new Error(`CDP: ${message.error.message}`));
        else waiter?.resolve(message.result);
      } else for (const listener of this.listeners) listener(message);
    });
  }

  send<T = Record<string, unknown>>(method: string, params: object = {}, sessionId?: string): Promise<T> {
    const id = this.next++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  }

  close(): void {
    this.ws.close();
  }
}

/** A console message or an uncaught exception of the page. */
export interface ConsoleEntry {
  source: string;
  level: string;
  text: string;
}

export class Page {
  /** Every URL the page requested, in order (documents, scripts, fetches, images, data: URLs too). */
  readonly requests: string[] = [];
  /** Console messages (CSP violations and failed loads among them) and uncaught exceptions. */
  readonly console: ConsoleEntry[] = [];
  private readonly handlers = new Map<string, ((params: Record<string, unknown>) => void)[]>();

  constructor(
    private readonly connection: Connection,
    private readonly sessionId: string,
    private readonly targetId: string,
  ) {
    connection.listeners.add((m) => {
      if (m.sessionId !== sessionId || !m.method) return;
      for (const handler of this.handlers.get(m.method) ?? []) handler(m.params ?? {});
    });
    this.on("Network.requestWillBeSent", (p) => this.requests.push((p.request as { url: string }).url));
    this.on("Log.entryAdded", (p) => {
      const entry = p.entry as ConsoleEntry;
      this.console.push({ source: entry.source, level: entry.level, text: entry.text });
    });
    this.on("Runtime.exceptionThrown", (p) => {
      const details = p.exceptionDetails as { text: string; exception?: { description?: string } };
      this.console.push({
        source: "exception",
        level: "error",
        text: details.exception?.description ?? details.text,
      });
    });
  }

  send<T = Record<string, unknown>>(method: string, params: object = {}): Promise<T> {
    return this.connection.send<T>(method, params, this.sessionId);
  }

  on(method: string, handler: (params: Record<string, unknown>) => void): void {
    this.handlers.set(method, [...(this.handlers.get(method) ?? []), handler]);
  }

  /** Navigates and waits for the load event. */
  async goto(url: string): Promise<void> {
    const loaded = new Promise<void>((resolve) => this.on("Page.loadEventFired", () => resolve()));
    await this.send("Page.navigate", { url });
    await loaded;
  }

  /** The value of an expression in the page (promises awaited); a thrown error is thrown here. */
  async evaluate<T>(expression: string): Promise<T> {
    const answer = await this.send<{
      result: { value?: T };
      exceptionDetails?: { text: string; exception?: { description?: string } };
    }>("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true });
    if (answer.exceptionDetails) {
      const d = answer.exceptionDetails;
      throw new Error(`in the page: ${d.exception?.description ?? d.text}`);
    }
    return answer.result.value as T;
  }

  /** Waits until the expression is truthy; returns its value. */
  async waitFor<T>(expression: string, timeoutMs = 15_000): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await this.evaluate<T>(expression);
      if (value) return value;
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${expression}`);
      await Bun.sleep(25);
    }
  }

  /** A left click at the middle of the element, as the mouse does it. */
  async click(selector: string): Promise<void> {
    const box = await this.evaluate<{ x: number; y: number } | null>(`(() => {
      const el = document.querySelector(${JSON.stringify(selector)});
      if (!el) return null;
      el.scrollIntoView({ block: "center" });
      const r = el.getBoundingClientRect();
      return { x: r.left + r.width / 2, y: r.top + r.height / 2 };
    })()`);
    if (!box) throw new Error(`no element ${selector}`);
    const at = { x: box.x, y: box.y, button: "left", clickCount: 1 };
    await this.send("Input.dispatchMouseEvent", { type: "mouseMoved", x: at.x, y: at.y });
    await this.send("Input.dispatchMouseEvent", { type: "mousePressed", ...at });
    await this.send("Input.dispatchMouseEvent", { type: "mouseReleased", ...at });
  }

  /** Replaces a field's text as typing does: click into it, select all, insert the text. */
  async type(selector: string, text: string): Promise<void> {
    await this.click(selector);
    await this.send("Input.dispatchKeyEvent", {
      type: "rawKeyDown",
      key: "a",
      code: "KeyA",
      modifiers: 2,
      commands: ["selectAll"],
    });
    await this.send("Input.dispatchKeyEvent", { type: "keyUp", key: "a", code: "KeyA", modifiers: 2 });
    if (text === "") {
      await this.send("Input.dispatchKeyEvent", { type: "rawKeyDown", key: "Delete", code: "Delete" });
      await this.send("Input.dispatchKeyEvent", { type: "keyUp", key: "Delete", code: "Delete" });
    } else await this.send("Input.insertText", { text });
  }

  /** Chooses files in an `<input type="file">`, as the file dialog does. */
  async setFiles(selector: string, files: string[]): Promise<void> {
    const { root } = await this.send<{ root: { nodeId: number } }>("DOM.getDocument", { depth: 0 });
    const { nodeId } = await this.send<{ nodeId: number }>("DOM.querySelector", {
      nodeId: root.nodeId,
      selector,
    });
    if (!nodeId) throw new Error(`no element ${selector}`);
    await this.send("DOM.setFileInputFiles", { nodeId, files });
  }

  /** A PNG of the viewport (or of the whole page). */
  async screenshot(fullPage = false): Promise<Uint8Array> {
    const { data } = await this.send<{ data: string }>("Page.captureScreenshot", {
      format: "png",
      captureBeyondViewport: fullPage,
    });
    return Buffer.from(data, "base64");
  }

  close(): Promise<unknown> {
    return this.connection.send("Target.closeTarget", { targetId: this.targetId });
  }
}

export interface Browser {
  /** A new tab (its own sessionStorage) of `width` × `height` CSS pixels, its events recorded from the start. */
  newPage(size?: { width: number; height: number }): Promise<Page>;
  close(): Promise<void>;
}

/** Starts headless Chromium with a fresh profile and a DevTools port of its choosing. */
export async function launchChromium(): Promise<Browser> {
  if (!CHROMIUM) throw new Error("Debian chromium is needed for this test: apt-get install chromium");
  const profile = await mkdtemp(join(tmpdir(), "sdx-chromium-"));
  const proc = Bun.spawn(
    [CHROMIUM, ...CHROMIUM_FLAGS, `--user-data-dir=${profile}`, "--remote-debugging-port=0", "about:blank"],
    { stdin: "ignore", stdout: "ignore", stderr: "pipe" },
  );
  const endpoint = await new Promise<string>((resolve, reject) => {
    let text = "";
    const decoder = new TextDecoder();
    const timer = setTimeout(() => reject(new Error(`chromium did not start:\n${text}`)), 20_000);
    void (async () => {
      // Read stderr to its end: the DevTools address first, then whatever Chromium logs (a full pipe would block it).
      for await (const chunk of proc.stderr) {
        text += decoder.decode(chunk);
        const match = /DevTools listening on (ws:\/\/\S+)/.exec(text);
        if (match?.[1]) {
          clearTimeout(timer);
          resolve(match[1]);
        }
      }
      reject(new Error(`chromium exited:\n${text}`));
    })();
  });
  const ws = new WebSocket(endpoint);
  await new Promise((resolve, reject) => {
    ws.addEventListener("open", resolve, { once: true });
    ws.addEventListener("error", () => reject(new Error(`cannot connect to ${endpoint}`)), { once: true });
  });
  const connection = new Connection(ws);
  return {
    async newPage(size = { width: 1280, height: 900 }) {
      const { targetId } = await connection.send<{ targetId: string }>("Target.createTarget", {
        url: "about:blank",
      });
      const { sessionId } = await connection.send<{ sessionId: string }>("Target.attachToTarget", {
        targetId,
        flatten: true,
      });
      const page = new Page(connection, sessionId, targetId);
      await Promise.all(
        ["Page.enable", "Runtime.enable", "Network.enable", "Log.enable"].map((m) => page.send(m)),
      );
      await page.send("Emulation.setDeviceMetricsOverride", { ...size, deviceScaleFactor: 1, mobile: false });
      return page;
    },
    async close() {
      connection.close();
      proc.kill();
      await proc.exited;
      await rm(profile, { recursive: true, force: true });
    },
  };
}
