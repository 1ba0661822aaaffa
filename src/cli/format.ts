/** Plain-text tables and numbers for the command line (shared with the extension's log, in core). */
export { int, shape, table } from "../core/text-table.js";
