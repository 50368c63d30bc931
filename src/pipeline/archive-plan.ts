import { CofferError } from '../core/errors';
import type { Manifest, ManifestTable } from '../core/manifest';
import type { SequenceInfo, TableInfo } from '../db/introspect';
import { APP_SCHEMA, knownMigrations } from '../db/migrate';
import { schemaAtLevel, type SchemaLevel } from '../db/schema-catalog';

/**
 * The checks that compare an archive with the schema it must be restored into. Restore runs them
 * twice: against the schema catalog before it touches the database, and against the live schema
 * inside its transaction; verify runs them against the catalog. One set of rules for all three.
 */

export interface TablePlan {
  entry: ManifestTable;
  table: TableInfo;
}

/** The last migration of the archive that this build knows: the level its tables are restored at. */
export function archiveLevel(m: Manifest): string | undefined {
  const known = new Set(knownMigrations().map((k) => k.name));
  return m.migrations.filter((n) => known.has(n)).pop();
}

/** The schema at the archive's level, from the catalog (undefined when the archive names no known migration). */
export function schemaForArchive(m: Manifest): { level: string; schema: SchemaLevel } | undefined {
  const level = archiveLevel(m);
  const schema = level === undefined ? undefined : schemaAtLevel(level);
  return level !== undefined && schema ? { level, schema } : undefined;
}

/**
 * An archive without migrations says nothing about the schema its rows belong to, and restoring it
 * would leave an empty database: refused unless forced.
 */
export function migrationLevelProblem(m: Manifest): string | undefined {
  if (m.migrations.length === 0) return 'archive lists no migrations, so it cannot be matched to a schema (restoring it would empty the database; --force to restore it anyway)';
  return undefined;
}

/** Pairs every archive table with its table in the schema; lists every mismatch. */
export function planTables(m: Manifest, tables: TableInfo[], opts: { force: boolean; where: string }): { plan: TablePlan[]; problems: string[] } {
  const byName = new Map(tables.map((t) => [`${t.schema}.${t.name}`, t]));
  const plan: TablePlan[] = [];
  const problems: string[] = [];
  for (const entry of m.tables) {
    const key = `${entry.schema}.${entry.name}`;
    const table = byName.get(key);
    if (!table) {
      problems.push(`archive has table ${key}, which ${opts.where} does not have`);
      continue;
    }
    const cols = new Set(table.columns.map((c) => c.name));
    const missing = entry.columns.filter((c) => !cols.has(c.name)).map((c) => c.name);
    // A column the schema lacks would be dropped silently by jsonb_populate_record: refuse instead.
    if (missing.length) problems.push(`archive table ${entry.name} has columns ${missing.join(', ')}, which ${opts.where} does not have`);
    else plan.push({ entry, table });
    byName.delete(key);
  }
  if (byName.size > 0 && !opts.force) {
    problems.push(`archive has no data for tables ${[...byName.keys()].join(', ')} (incomplete archive? --force restores them empty)`);
  }
  return { plan, problems };
}

/**
 * Every sequence the manifest sets must be one of the application schema's, exist in the schema, and
 * hold a value its range accepts. Sequences elsewhere are refused outright: setval is not undone by a
 * rollback, so a restore may only touch sequences it creates itself.
 */
export function sequenceProblems(m: Manifest, sequences: SequenceInfo[] | undefined, where: string): string[] {
  const problems: string[] = [];
  const byName = new Map((sequences ?? []).map((s) => [s.name, s]));
  const seen = new Set<string>();
  for (const s of m.sequences) {
    const key = `${s.schema}.${s.name}`;
    if (s.schema !== APP_SCHEMA) {
      problems.push(`manifest.json sets sequence ${key}, outside the application schema ${APP_SCHEMA}`);
      continue;
    }
    if (seen.has(key)) problems.push(`manifest.json sets sequence ${key} twice`);
    seen.add(key);
    if (!sequences) continue;
    const known = byName.get(s.name);
    if (!known) {
      problems.push(`manifest.json sets sequence ${key}, which ${where} does not have`);
      continue;
    }
    const value = BigInt(s.last_value);
    if (value < BigInt(known.min) || value > BigInt(known.max)) {
      problems.push(`manifest.json sets sequence ${key} to ${s.last_value}, outside its range ${known.min}..${known.max}`);
    }
  }
  return problems;
}

/** Throws the first problem as the error restore reports. */
export function refuse(problems: string[]): void {
  if (problems.length > 0) throw new CofferError('E_ARCHIVE_INVALID', problems.length === 1 ? problems[0] : `${problems[0]} (and ${problems.length - 1} more problem(s))`, { details: { problems } });
}
