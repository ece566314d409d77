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

export function clearChildren(node) {
  while (node.firstChild) node.removeChild(node.firstChild);
}

/* "1 segment", "3 segments". */
export function plural(count, noun) {
  return count + " " + noun + (count === 1 ? "" : "s");
}
