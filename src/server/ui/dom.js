/**
 * Element builders for the status page. Every string child becomes a text
 * node: nothing that came from the API (agent ids, subjects, reasons) is ever
 * parsed as HTML. Attribute names and event handlers come from this page's
 * code only.
 */

/**
 * @param {string} tag
 * @param {Record<string, unknown>} [props] `className`, `on<event>` handlers, or attributes
 * @param {...(Node | string | number | null | undefined | false)} children
 * @returns {HTMLElement}
 */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'className') node.className = String(value);
    else if (name.startsWith('on') && typeof value === 'function') node.addEventListener(name.slice(2), /** @type {EventListener} */ (value));
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }
  return node;
}

/**
 * A table with a header row; each cell is a node or a value shown as text.
 * @param {string[]} headings
 * @param {Array<Array<Node | string | number>>} rows
 * @param {(rowIndex: number) => Record<string, unknown>} [rowProps]
 */
export function table(headings, rows, rowProps) {
  return el(
    'table',
    {},
    el('thead', {}, el('tr', {}, ...headings.map((h) => el('th', { scope: 'col' }, h)))),
    el('tbody', {}, ...rows.map((cells, i) => el('tr', rowProps ? rowProps(i) : {}, ...cells.map((c) => el('td', {}, c))))),
  );
}

/** Replaces a panel's body with `content` (null entries, e.g. an absent footnote, are left out). */
export function fill(panel, ...content) {
  const body = panel.querySelector('.panel-body');
  body.replaceChildren(...content.filter((node) => node !== null && node !== undefined));
}
