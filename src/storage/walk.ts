import fs from 'node:fs';
import path from 'node:path';

export type WalkItem =
  | { kind: 'file'; rel: string; abs: string; size: number }
  | { kind: 'dir'; rel: string }
  | { kind: 'error'; rel: string; error: string };

/**
 * Walks a folder depth-first in name order, yielding regular files and directories with paths relative
 * to `root` ('/'-separated). What cannot be read, and anything that is not a regular file or a
 * directory (symlinks, sockets), is yielded as an error so the caller can record it and go on.
 * Entries whose name `skip` accepts are passed over silently (with everything below them). With
 * `stat: false` files are not stat'ed and their size is -1 (for callers that open them anyway).
 */
export async function* walkFolder(root: string, base: string, opts: { skip?: (name: string) => boolean; stat?: boolean } = {}): AsyncGenerator<WalkItem> {
  let entries: fs.Dirent[];
  try {
    entries = await fs.promises.readdir(root, { withFileTypes: true });
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT' && base.indexOf('/') < 0) return;
    yield { kind: 'error', rel: base, error: `${e.code ?? 'EIO'}: ${e.message.replace(/, \w+ '.*'$/, '')}` };
    return;
  }
  entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const entry of entries) {
    if (opts.skip?.(entry.name)) continue;
    const abs = path.join(root, entry.name);
    const rel = `${base}/${entry.name}`;
    if (entry.isDirectory()) {
      yield { kind: 'dir', rel };
      yield* walkFolder(abs, rel, opts);
    } else if (entry.isFile()) {
      if (opts.stat === false) {
        yield { kind: 'file', rel, abs, size: -1 };
        continue;
      }
      try {
        const st = await fs.promises.stat(abs);
        yield { kind: 'file', rel, abs, size: st.size };
      } catch (err) {
        const e = err as NodeJS.ErrnoException;
        yield { kind: 'error', rel, error: `${e.code ?? 'EIO'}: cannot stat` };
      }
    } else {
      yield { kind: 'error', rel, error: entry.isSymbolicLink() ? 'symbolic link skipped' : 'not a regular file, skipped' };
    }
  }
}

/** Files and bytes below `root` (what a backup of it will read), skipping what `skip` names. */
export async function folderUsage(root: string, base: string, opts: { skip?: (name: string) => boolean } = {}): Promise<{ files: number; bytes: number }> {
  let files = 0;
  let bytes = 0;
  for await (const item of walkFolder(root, base, opts)) {
    if (item.kind === 'file') {
      files++;
      bytes += item.size;
    }
  }
  return { files, bytes };
}
