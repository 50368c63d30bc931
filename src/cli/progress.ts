import cliProgress from 'cli-progress';
import type { Progress } from '../core/jobs';

/**
 * A one-line progress display on stderr, only when stderr is a terminal; silent otherwise (cron,
 * pipes, CI). Redraws at most a few times a second.
 */
export class ProgressLine {
  private last = 0;
  private shown = false;
  readonly enabled: boolean;

  constructor(enabled = !!process.stderr.isTTY) {
    this.enabled = enabled;
  }

  update(text: string, force = false): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (!force && now - this.last < 200) return;
    this.last = now;
    const width = process.stderr.columns || 100;
    process.stderr.write('\r\x1b[K' + text.slice(0, width - 1));
    this.shown = true;
  }

  done(text?: string): void {
    if (!this.enabled) return;
    if (this.shown) process.stderr.write('\r\x1b[K');
    if (text) process.stderr.write(text + '\n');
    this.shown = false;
  }
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '?';
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  return m > 0 ? `${m}m${String(s).padStart(2, '0')}s` : `${s}s`;
}

/**
 * A progress bar for a stored-backup job (percent and ETA as the job reports them), on stderr, only
 * when stderr is a terminal.
 */
export class JobProgressBar {
  private bar?: cliProgress.SingleBar;
  readonly enabled: boolean;

  constructor(
    private readonly label: string,
    enabled = !!process.stderr.isTTY,
  ) {
    this.enabled = enabled;
  }

  update(p: Progress | null): void {
    if (!this.enabled || !p) return;
    const payload = {
      phase: p.phase.padEnd(13),
      left: p.eta_s === null ? '?' : formatDuration(p.eta_s),
      done: `${p.rows} rows, ${formatBytes(p.bytes)}`,
    };
    const percent = Math.round(p.percent);
    if (!this.bar) {
      this.bar = new cliProgress.SingleBar(
        {
          stream: process.stderr,
          format: `${this.label} {phase} [{bar}] {percentage}% | ETA {left} | {done}`,
          barsize: 30,
          hideCursor: true,
          clearOnComplete: true,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(100, percent, payload);
    } else {
      this.bar.update(percent, payload);
    }
  }

  stop(): void {
    this.bar?.stop();
    this.bar = undefined;
  }
}
