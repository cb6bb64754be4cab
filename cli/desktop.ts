/**
 * Opening a file in the desktop's browser, where there is a desktop: macOS (`open`), Windows (`start`), and on
 * other systems a graphical session (DISPLAY or WAYLAND_DISPLAY set) with `xdg-open`. Elsewhere (a server, SSH
 * without X forwarding, a container) nothing is started and the reason is given.
 */

export type Opener = { argv: string[] } | { reason: string };

/** How `file` would be opened on `platform` with `env`, or why it cannot be. */
export function opener(file: string, platform: string, env: Record<string, string | undefined>): Opener {
  if (platform === "darwin") return { argv: ["open", file] };
  // `start`'s first quoted argument is the window title, hence the empty one.
  if (platform === "win32") return { argv: ["cmd", "/c", "start", "", file] };
  if (!env.DISPLAY && !env.WAYLAND_DISPLAY) {
    return { reason: "no graphical session (neither DISPLAY nor WAYLAND_DISPLAY is set)" };
  }
  return { argv: ["xdg-open", file] };
}

/** Starts the opener and leaves it running; answers why it could not be started, or null. */
export function openFile(
  file: string,
  platform: string,
  env: Record<string, string | undefined>,
): string | null {
  const how = opener(file, platform, env);
  if ("reason" in how) return how.reason;
  try {
    const child = Bun.spawn(how.argv, { stdin: "ignore", stdout: "ignore", stderr: "ignore", env });
    child.unref();
    return null;
  } catch (e) {
    return `${how.argv[0]} could not be started (${e instanceof Error ? e.message : String(e)})`;
  }
}
