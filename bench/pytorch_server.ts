// The PyTorch side of the engine benchmark (bench/engines.ts): bench/pytorch_step.py
// as a subprocess of Debian's /usr/bin/python3, asked for training steps over
// JSON lines on stdin/stdout (its serve()).
import { spawn, spawnSync } from 'node:child_process';

export const PYTHON = '/usr/bin/python3';

/**
 * glibc malloc settings for the PyTorch child. By default glibc hands large
 * freed blocks back to the OS (mmap, heap trim) and each step page-faults its
 * activations in again: PyTorch's CPU steps ran 1.4-4x slower, and bimodal
 * between processes (model b: 340-394 ms a step against 151-186 ms). The
 * largest mmap threshold (32 MB) was not enough for two-view batches (model b
 * at batch 512: 3.4-4.8 s default, 2.0 s, 0.76-0.80 s with mmap off), so mmap
 * is off and the heap is never trimmed. Our engine keeps its own buffer pool
 * and is unaffected; jemalloc (LD_PRELOAD) was 3-9x slower still.
 */
export const PYTORCH_MALLOC_ENV: Readonly<Record<string, string>> = {
  MALLOC_MMAP_MAX_: '0',
  MALLOC_TRIM_THRESHOLD_: String(2 ** 34),
};

/** Why PyTorch cannot run here, or undefined when it can. */
export function pytorchUnavailable(): string | undefined {
  const probe = spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' });
  if (probe.error) return `${PYTHON} not found`;
  if (probe.status !== 0) return `${PYTHON} cannot import torch (apt-get install python3-torch)`;
  return undefined;
}

/** bench/pytorch_step.py (at `script`): PyTorch steps on request, for the model `spec` at `batch`. */
export class PytorchServer {
  private readonly child;
  private readonly lines: string[] = [];
  private waiting: ((line: string | null) => void) | null = null;
  private stderrTail = '';
  private closed = false;

  constructor(script: string, spec: object, batch: number) {
    this.child = spawn(PYTHON, [script, '--spec', JSON.stringify(spec), '--batch', String(batch)], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, ...PYTORCH_MALLOC_ENV },
    });
    let partial = '';
    this.child.stdout.on('data', (d: Buffer) => {
      const parts = (partial + d.toString()).split('\n');
      partial = parts.pop()!;
      for (const line of parts) this.push(line);
    });
    this.child.stderr.on('data', (d: Buffer) => (this.stderrTail = (this.stderrTail + d.toString()).slice(-2000)));
    this.child.on('close', () => {
      this.closed = true;
      this.waiting?.(null);
    });
  }

  private push(line: string): void {
    if (this.waiting) {
      const resolve = this.waiting;
      this.waiting = null;
      resolve(line);
    } else this.lines.push(line);
  }

  private async next(): Promise<unknown> {
    const line = this.lines.shift() ?? (this.closed ? null : await new Promise<string | null>((resolve) => (this.waiting = resolve)));
    if (line === null) throw new Error(`pytorch_step.py exited: ${this.stderrTail.trim().split('\n').at(-1) ?? ''}`);
    return JSON.parse(line);
  }

  /** Waits for the model to be built; its parameter count. */
  async ready(): Promise<number> {
    return ((await this.next()) as { parameters: number }).parameters;
  }

  /** `count` steps at `threads` threads; `bf16`: under torch.autocast('cpu', dtype=torch.bfloat16). */
  async steps(threads: number, count: number, bf16 = false): Promise<number[]> {
    this.child.stdin.write(`${threads} ${count}${bf16 ? ' bf16' : ''}\n`);
    return ((await this.next()) as { stepsMs: number[] }).stepsMs;
  }

  close(): void {
    this.child.stdin.end();
  }
}
