import { z } from 'zod';

/** A point in time as the JSON answers write it (Date.toISOString()). */
export const isoTime = z.string().describe('ISO 8601 time');
