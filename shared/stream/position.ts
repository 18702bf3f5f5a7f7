/**
 * A position in one user's stream: `pos` counts 1, 2, 3… within an `epoch`, with no holes. A new
 * epoch starts when the allocator lost the user's counter (docs/delivery.md); epochs only grow, so
 * positions order by (epoch, pos). `pos` 0 is "before the first entry" of the epoch.
 */
export interface Position {
  epoch: number;
  pos: number;
}

/** The epoch of entries migrated from the commit-sequence era (cursors without a dot). */
export const LEGACY_EPOCH = 0;

export const formatPosition = (p: Position): string => `${p.epoch}.${p.pos}`;

/** Parses a validated cursor (protocol.Cursor). A legacy cursor (no dot) comes back as `{legacy}`. */
export function parseCursor(s: string): Position | { legacy: number } {
  const dot = s.indexOf(".");
  if (dot === -1) return { legacy: Number(s) };
  return { epoch: Number(s.slice(0, dot)), pos: Number(s.slice(dot + 1)) };
}

export function comparePositions(a: Position, b: Position): number {
  return a.epoch !== b.epoch ? Math.sign(a.epoch - b.epoch) : Math.sign(a.pos - b.pos);
}

/** When the epoch was opened, in ms since the epoch (epochs are the allocator's clock in µs). */
export const epochOpenedAtMs = (epoch: number) => Math.floor(epoch / 1000);
