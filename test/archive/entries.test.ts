import {
  ARCHIVE_TOP_LEVEL,
  checkEntryName,
  EntryNameRegistry,
  shouldStore,
  tableEntryName,
  UPLOAD_FOLDERS,
  VERSION_CONTENT,
} from '../../src/archive';

describe('tableEntryName', () => {
  test('ordinary identifiers read naturally', () => {
    expect(tableEntryName('public', 'projects')).toBe('db/public.projects.jsonl');
    expect(tableEntryName('app', 'Ünïcode_表')).toBe('db/app.Ünïcode_表.jsonl');
  });

  test.each([
    ['public', '..'],
    ['.', 'x'],
    ['a/b', 'c'],
    ['a', '..\\..\\evil'],
    ['a', 'x\0y'],
    ['a', 'line\nbreak'],
    ['/', '/'],
  ])('schema %j and table %j give one safe segment under db/', (schema, table) => {
    const name = tableEntryName(schema, table);
    expect(checkEntryName(name, ARCHIVE_TOP_LEVEL)).toBeNull();
    expect(name.startsWith('db/')).toBe(true);
    expect(name.slice(3)).not.toContain('/');
    // eslint-disable-next-line no-control-regex
    expect(name).not.toMatch(/[\\\x00-\x1f\x7f]/);
  });

  test('different tables never share an entry, even when dots and percent signs could make them collide', () => {
    const pairs: Array<[string, string]> = [
      ['a.b', 'c'],
      ['a', 'b.c'],
      ['a%2Eb', 'c'],
      ['a%', '2Eb.c'],
      ['public', '..'],
      ['public', '%2E%2E'],
    ];
    const names = pairs.map(([s, t]) => tableEntryName(s, t));
    expect(new Set(names).size).toBe(pairs.length);
  });
});

describe('shouldStore', () => {
  test.each(['a.jpg', 'b/C.JPEG', 'x.png', 'movie.mp4', 'a.tar.gz', 'doc.PDF', 'sheet.xlsx', 'font.woff2', 'x.zst', 'deep/dir/photo.heic'])(
    '%s (already compressed) is stored',
    (name) => expect(shouldStore(name)).toBe(true),
  );

  test.each(['notes.txt', 'data.json', 'image.svg', 'page.html', 'README', '.jpg', 'dir.png/file', 'x.', 'archive.tar'])(
    '%s is deflated',
    (name) => expect(shouldStore(name)).toBe(false),
  );
});

describe('checkEntryName', () => {
  test.each([
    ['VERSION'],
    ['manifest.json'],
    ['db/public.projects.jsonl'],
    ['uploadedfiles/'],
    ['uploadedfiles/a b/ü.txt'],
    ['uploadedimages/..hidden'],
  ])('%j is safe', (name) => expect(checkEntryName(name, ARCHIVE_TOP_LEVEL)).toBeNull());

  test.each([
    ['', 'empty name'],
    ['../evil', "'..' path segment"],
    ['a/../../b', "'..' path segment"],
    ['uploadedfiles/..', "'..' path segment"],
    ['/etc/passwd', 'absolute path'],
    ['C:\\x', 'backslash'],
    ['C:/x', 'drive letter'],
    ['uploadedfiles\\..\\x', 'backslash'],
    ['uploadedfiles//x', 'empty path segment'],
    ['uploadedfiles/x//', 'empty path segment'],
    ['uploadedfiles/./x', "'.' path segment"],
    ['uploadedfiles/a\0b', 'NUL'],
    ['db:stream', "'prefix:'"],
    ['uploadedfiles/\uD800x', 'lone surrogate'],
    ['uploadedfiles/' + 'x'.repeat(70_000), 'longer than 65535 bytes'],
    ['etc/passwd', "top-level name 'etc'"],
    ['VERSION2', "top-level name 'VERSION2'"],
    ['db', "'db' must be a folder, not a file"],
    ['uploadedfiles', "'uploadedfiles' must be a folder, not a file"],
  ])('%j is refused: %s', (name, reason) => {
    expect(checkEntryName(name, ARCHIVE_TOP_LEVEL)).toContain(reason);
  });

  test('without allowedTopLevel any top-level name passes', () => {
    expect(checkEntryName('anything/x', undefined)).toBeNull();
  });

  test('a bare name in allowedTopLevel allows a file or a folder; a name with a slash only a folder', () => {
    expect(checkEntryName('db', ['db'])).toBeNull();
    expect(checkEntryName('db/x', ['db'])).toBeNull();
    expect(checkEntryName('db/', ['db/'])).toBeNull();
    expect(checkEntryName('db/x', ['db/'])).toBeNull();
    expect(checkEntryName('db', ['db/'])).toContain('must be a folder');
  });
});

describe('EntryNameRegistry', () => {
  function firstProblem(names: string[]): string | null {
    const registry = new EntryNameRegistry();
    for (const name of names) {
      const reason = registry.add(name);
      if (reason !== null) return `${name}: ${reason}`;
    }
    return null;
  }

  test('accepts files with implied and explicit directories in any order', () => {
    expect(firstProblem(['u/a/b', 'u/a/', 'u/', 'u/c', 'u/a/d/'])).toBeNull();
  });

  test.each([
    [['u/a', 'u/a'], 'u/a: duplicate name'],
    [['u/', 'u/'], 'u/: duplicate name'],
    [['u/a', 'u/a/'], "u/a/: directory clashes with file 'u/a'"],
    [['u/a/', 'u/a'], "u/a: file clashes with directory 'u/a/'"],
    [['u/a/b', 'u/a'], "u/a: file clashes with directory 'u/a/'"],
    [['u/a', 'u/a/b'], "u/a/b: parent 'u/a' is a file"],
  ])('refuses %j', (names, problem) => {
    expect(firstProblem(names)).toBe(problem);
  });

  test('names are compared exactly: case and unicode forms differ', () => {
    expect(firstProblem(['u/A', 'u/a', 'u/\u00e9', 'u/e\u0301'])).toBeNull();
  });
});

test('format constants match DESIGN.md section 3', () => {
  expect(VERSION_CONTENT).toBe('1\n');
  expect([...UPLOAD_FOLDERS]).toEqual(['uploadedfiles', 'uploadedimages', 'uploadedassets']);
  expect([...ARCHIVE_TOP_LEVEL].sort()).toEqual(['VERSION', 'db/', 'manifest.json', 'uploadedassets/', 'uploadedfiles/', 'uploadedimages/']);
});
