/* Small DOM helpers. Text from the server only ever goes in through textContent, never as HTML. */

export function byId(id) {
  return document.getElementById(id);
}

export function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/* "1 segment", "3 segments". */
export function plural(count, noun) {
  return count + " " + noun + (count === 1 ? "" : "s");
}

/* The children of `parent` drawn from a list, by key: an entry drawn again with the same key and the same
 * `look` keeps its node, so partial results that grow are updated in place, not rebuilt (no flicker, no lost
 * focus). The nodes go after `first` (a fixed child such as the timeline's playhead), in the entries' order.
 */
export class KeyedNodes {
  constructor(parent, first = null) {
    this.parent = parent;
    this.first = first;
    this.shown = new Map();  // key → {look, node}
  }

  /* `entries`: [{key, look, build: () => node}]; returns the nodes in order. */
  render(entries) {
    const next = new Map();
    const nodes = [];
    let previous = this.first;
    for (const entry of entries) {
      let key = String(entry.key);
      while (next.has(key)) key += "'";  // a repeated key gets a node of its own
      const old = this.shown.get(key);
      const node = old && old.look === entry.look && old.node.parentNode === this.parent ? old.node : entry.build();
      const wanted = previous ? previous.nextSibling : this.parent.firstChild;
      if (node !== wanted) this.parent.insertBefore(node, wanted);  // moved only when out of place
      next.set(key, { look: entry.look, node });
      nodes.push(node);
      previous = node;
    }
    for (const [key, old] of this.shown) {
      const kept = next.get(key);
      if (!kept || kept.node !== old.node) old.node.remove();
    }
    this.shown = next;
    return nodes;
  }

  clear() {
    this.render([]);
  }
}
