// The results grid: each image with its seed, its PNG to download and a button that puts its settings back
// into the form. The newest run comes first; the oldest images leave when there are too many.

const MAX_CARDS = 64;

/** A PNG sent as base64, as an object URL (revoked when its card leaves). */
export function pngUrl(base64) {
  const bytes = Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  return URL.createObjectURL(new Blob([bytes], { type: "image/png" }));
}

function element(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

/**
 * A card for one image, placed after `previous` (the run's card before it) or, for a run's first, first of all.
 * Its "use these settings" button calls `onUse` and stays disabled until `enable()` (once the run's parameters
 * are known).
 */
export function addCard(grid, previous, { index, seed, url }, onUse) {
  const use = element("button", {
    type: "button",
    className: "quiet",
    textContent: "Use these settings",
    disabled: true,
  });
  use.setAttribute("aria-label", `Use the settings of image ${index + 1} (seed ${seed})`);
  use.addEventListener("click", onUse);
  const download = element("a", { href: url, download: `sdx-${seed}.png`, textContent: "PNG" });
  download.setAttribute("aria-label", `Download image ${index + 1} (seed ${seed}) as PNG`);
  const card = element("li", { className: "card" }, [
    element("img", { src: url, alt: `Image ${index + 1}, seed ${seed}` }),
    element("div", { className: "meta" }, [
      element("span", { className: "seed", textContent: `seed ${seed}` }),
      download,
      use,
    ]),
  ]);
  card.dataset.seed = String(seed);
  if (previous?.parentNode === grid) previous.after(card);
  else grid.prepend(card);
  while (grid.children.length > MAX_CARDS) {
    const last = grid.lastElementChild;
    URL.revokeObjectURL(last.querySelector("img").src);
    last.remove();
  }
  return {
    card,
    enable: () => {
      use.disabled = false;
    },
  };
}
