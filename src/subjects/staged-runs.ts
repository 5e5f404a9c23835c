/**
 * An external merge sort of the rows of an import, by (key, tenant, line): rows are buffered,
 * sorted a run at a time in memory and appended to the scratch table; the merge then reads
 * every run a page at a time and yields the rows in order. Memory is bounded by one run plus a
 * page per run, and no B-tree is ever updated at random: at 10 M rows in file order, a
 * key-indexed staging table cost a page miss per row (a 16 MiB cache against a 400 MB index).
 *
 * Rows with the same (key, tenant) come out together, the first line first: the repeated ones
 * are the duplicates.
 */
import type { ImportScratch, StagedRow } from '../store/subjects.js';

/**
 * Rows per run. Sorting a run is one synchronous call: 20 000 rows take ~30 ms, well inside
 * the event-loop budget (ARCHITECTURE.md invariant 8); 100 000 took ~200 ms.
 */
const RUN_ROWS = 20_000;
/** Rows appended per call while writing a run (the caller yields between calls). */
const APPEND_ROWS = 5_000;
/** Rows read per run and page during the merge: 500 runs (10 M rows) hold 64 000 rows. */
const PAGE_ROWS = 128;

/** Key order as SQLite's BINARY collation has it for the ASCII keys of nearly every file. */
export function compareStaged(a: StagedRow, b: StagedRow): number {
  if (a.key !== b.key) return a.key < b.key ? -1 : 1;
  if (a.tenant !== b.tenant) return a.tenant < b.tenant ? -1 : 1;
  return a.line - b.line;
}

export class StagedRuns {
  private buffer: StagedRow[] = [];
  /** Runs as position ranges (from, to] of the scratch table. */
  private readonly runs: { from: number; to: number }[] = [];

  constructor(
    private readonly scratch: ImportScratch,
    private readonly runRows = RUN_ROWS,
  ) {}

  /** Rows added so far. */
  get count(): number {
    return this.scratch.stagedCount + this.buffer.length;
  }

  /** Buffers a row; true when the buffer holds a whole run (then call flush). */
  add(row: StagedRow): boolean {
    this.buffer.push(row);
    return this.buffer.length >= this.runRows;
  }

  /** Sorts the buffered rows and appends them as a run, awaiting `pause` between slices. */
  async flush(pause: () => Promise<void>): Promise<void> {
    if (this.buffer.length === 0) return;
    const rows = this.buffer;
    this.buffer = [];
    // Stable: rows of equal (key, tenant) keep their file order, which is line order.
    rows.sort(compareStaged);
    await pause();
    const from = this.scratch.stagedCount;
    for (let i = 0; i < rows.length; i += APPEND_ROWS) {
      this.scratch.append(rows.slice(i, i + APPEND_ROWS));
      await pause();
    }
    this.runs.push({ from, to: this.scratch.stagedCount });
  }

  /**
   * Every flushed row in (key, tenant, line) order. Synchronous: the caller yields between
   * the rows it takes (each page read is small).
   */
  *merged(pageRows = PAGE_ROWS): Generator<StagedRow> {
    // Every run is a sample of the same key range: with equal pages, all runs would run out of
    // rows at about the same point of the merge and be read again together (500 reads at once
    // at 10 M rows, a 150 ms stall). First pages of graded sizes spread the reads out.
    const count = this.runs.length;
    const cursors = this.runs.map((run, i) => new RunCursor(this.scratch, run.from, run.to, pageRows, Math.max(1, Math.round((pageRows * (i + 1)) / count)))).filter((c) => c.head !== undefined);
    const heap = new CursorHeap(cursors);
    for (;;) {
      const top = heap.top();
      if (top === undefined) return;
      yield top.head!;
      if (top.next()) heap.siftTopDown();
      else heap.popTop();
    }
  }
}

class RunCursor {
  private page: StagedRow[] = [];
  private index = 0;
  head: StagedRow | undefined;

  constructor(
    private readonly scratch: ImportScratch,
    private position: number,
    private readonly to: number,
    private readonly pageRows: number,
    firstPageRows: number,
  ) {
    this.read(firstPageRows);
    this.head = this.page[this.index++];
  }

  private read(rows: number): void {
    const limit = Math.min(rows, this.to - this.position);
    this.page = limit > 0 ? this.scratch.stagedFrom(this.position, limit) : [];
    this.position += this.page.length;
    this.index = 0;
  }

  /** Moves to the next row of the run; false at its end. */
  next(): boolean {
    if (this.index >= this.page.length) this.read(this.pageRows);
    this.head = this.page[this.index++];
    return this.head !== undefined;
  }
}

/** A binary min-heap of cursors by their head row. */
class CursorHeap {
  constructor(private readonly items: RunCursor[]) {
    for (let i = (items.length >> 1) - 1; i >= 0; i--) this.siftDown(i);
  }

  top(): RunCursor | undefined {
    return this.items[0];
  }

  popTop(): void {
    const last = this.items.pop()!;
    if (this.items.length === 0) return;
    this.items[0] = last;
    this.siftDown(0);
  }

  siftTopDown(): void {
    this.siftDown(0);
  }

  private siftDown(i: number): void {
    const items = this.items;
    const n = items.length;
    const item = items[i]!;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) break;
      const right = left + 1;
      const child = right < n && compareStaged(items[right]!.head!, items[left]!.head!) < 0 ? right : left;
      if (compareStaged(items[child]!.head!, item.head!) >= 0) break;
      items[i] = items[child]!;
      i = child;
    }
    items[i] = item;
  }
}
