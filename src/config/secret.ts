import { inspect } from 'node:util';

/**
 * Holds a secret so that logging, JSON serialisation or util.inspect of a config object can never
 * print it. Only `reveal()` gives the value, and only code that needs it calls that.
 */
export class Secret {
  readonly #value: string;

  constructor(value: string) {
    this.#value = value;
  }

  reveal(): string {
    return this.#value;
  }

  get length(): number {
    return this.#value.length;
  }

  toString(): string {
    return '[redacted]';
  }

  toJSON(): string {
    return '[redacted]';
  }

  [inspect.custom](): string {
    return '[redacted]';
  }
}
