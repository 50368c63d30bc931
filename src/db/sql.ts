/** Quotes an SQL identifier. Every identifier that reaches SQL text goes through here. */
export function ident(name: string): string {
  if (name.includes('\0')) throw new Error('identifier contains a NUL byte');
  return '"' + name.replace(/"/g, '""') + '"';
}

/** `"schema"."name"`. */
export function qualified(schema: string, name: string): string {
  return `${ident(schema)}.${ident(name)}`;
}

/** Quotes a string literal, for the rare statements that cannot take parameters (DDL, COPY). */
export function literal(value: string): string {
  if (value.includes('\0')) throw new Error('literal contains a NUL byte');
  return "'" + value.replace(/'/g, "''") + "'";
}
